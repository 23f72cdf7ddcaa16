-- The unresolved dependents of a graft step wait for every step it grafted.
UPDATE workflow_nodes SET pending = pending + :n
WHERE resolution IS NULL AND job_id IN (SELECT job_id FROM baton_workflow_deps WHERE dep_job_id = :graft)
RETURNING job_id
