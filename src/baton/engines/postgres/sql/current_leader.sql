-- baton:prepare (hot path)
SELECT node, instance, elected_at, expires_at FROM baton_leaders WHERE name = 'baton' AND expires_at > now()
