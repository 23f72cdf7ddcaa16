INSERT INTO baton_workflow_deps (dep_job_id, job_id, workflow_id)
SELECT dep_job_id, job_id, workflow_id
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(dep_job_id bigint, job_id bigint, workflow_id text)
