SELECT max(id) AS id FROM baton_notices
