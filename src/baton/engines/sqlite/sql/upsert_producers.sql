-- baton:prepare (hot path)
INSERT INTO baton_producers (uuid, node, queue, meta)
SELECT json_extract(value, '$.uuid'), json_extract(value, '$.node'), json_extract(value, '$.queue'), json_extract(value, '$.meta') FROM json_each(:rows) WHERE true
ON CONFLICT (uuid) DO UPDATE SET updated_at = ((julianday('now') - 2440587.5) * 86400.0), meta = excluded.meta
