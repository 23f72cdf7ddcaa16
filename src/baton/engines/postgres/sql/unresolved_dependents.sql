-- The unresolved dependents of steps a retry reopens, with their ignore flags (reopen_steps).
SELECT e.dep_job_id, e.job_id, n.ignore_cancelled, n.ignore_discarded, n.ignore_deleted
FROM baton_workflow_deps e
JOIN workflow_nodes n ON n.job_id = e.job_id
WHERE e.dep_job_id = ANY (%(ids)s::bigint[]) AND n.resolution IS NULL
ORDER BY e.job_id
