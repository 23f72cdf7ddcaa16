-- Edges into new steps from dependencies that have already resolved (append_workflow).
SELECT e.job_id, d.resolution AS dep_resolution, d.name AS dep_name,
       n.ignore_cancelled, n.ignore_discarded, n.ignore_deleted
FROM baton_workflow_deps e
JOIN workflow_nodes d ON d.job_id = e.dep_job_id
JOIN workflow_nodes n ON n.job_id = e.job_id
WHERE e.job_id = ANY (%(ids)s::bigint[]) AND d.resolution IS NOT NULL AND n.resolution IS NULL
