-- baton:prepare (hot path)
INSERT INTO baton_producers (uuid, node, queue, meta)
SELECT r.uuid, r.node, r.queue, r.meta
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(uuid uuid, node text, queue text, meta jsonb)
ON CONFLICT (uuid) DO UPDATE SET updated_at = now(), meta = excluded.meta
