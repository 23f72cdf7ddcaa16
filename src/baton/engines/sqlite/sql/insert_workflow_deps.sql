INSERT INTO baton_workflow_deps (dep_job_id, job_id, workflow_id)
SELECT json_extract(value, '$.dep_job_id'), json_extract(value, '$.job_id'), json_extract(value, '$.workflow_id') FROM json_each(:rows)
