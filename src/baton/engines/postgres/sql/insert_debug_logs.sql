INSERT INTO workflow_debug_logs (workflow_id, job_id, name, level, message)
SELECT workflow_id, job_id, name, level, message
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(workflow_id text, job_id bigint, name text, level text, message text)
