-- The workflow rows of a bulk insert (insert_workflows), up to 5 000 from one JSON array.
INSERT INTO baton_workflows (id, label, context)
SELECT id, label, context
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(id text, label text, context jsonb)
