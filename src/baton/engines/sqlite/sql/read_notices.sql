SELECT id, channel, payload FROM baton_notices WHERE id > :after ORDER BY id LIMIT 1000
