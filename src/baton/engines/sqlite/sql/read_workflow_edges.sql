SELECT dep_job_id, job_id FROM baton_workflow_deps WHERE job_id IN (SELECT value FROM json_each(:ids))
