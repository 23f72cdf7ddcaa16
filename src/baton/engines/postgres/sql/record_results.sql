UPDATE workflow_nodes n SET recorded = true, result = r.result
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(id bigint, result jsonb)
WHERE n.job_id = r.id
