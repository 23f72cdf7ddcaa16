UPDATE workflow_nodes n SET recorded = true, result = r.result::jsonb
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(id bigint, result text)
WHERE n.job_id = r.id
