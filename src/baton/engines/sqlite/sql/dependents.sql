SELECT e.job_id, d.resolution AS dep_resolution, d.name AS dep_name,
       n.ignore_cancelled, n.ignore_discarded, n.ignore_deleted
FROM baton_workflow_deps e
JOIN workflow_nodes d ON d.job_id = e.dep_job_id
JOIN workflow_nodes n ON n.job_id = e.job_id
WHERE e.dep_job_id IN (SELECT value FROM json_each(:ids)) AND n.resolution IS NULL
