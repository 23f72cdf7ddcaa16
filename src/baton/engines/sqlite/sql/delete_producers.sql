-- baton:prepare (hot path)
DELETE FROM baton_producers WHERE uuid IN (SELECT value FROM json_each(:uuids))
