SELECT n.job_id, n.workflow_id, min(d.name) AS dep_name
FROM workflow_nodes n
JOIN baton_jobs j ON j.id = n.job_id AND j.state NOT IN ('completed', 'discarded', 'cancelled')
JOIN baton_workflow_deps e ON e.job_id = n.job_id
JOIN workflow_nodes d ON d.job_id = e.dep_job_id
WHERE n.resolution IS NULL AND NOT n.ignore_deleted
  AND (d.resolution IS NULL OR d.resolution = 'deleted')
  AND NOT EXISTS (SELECT 1 FROM baton_jobs dj WHERE dj.id = d.job_id)
GROUP BY n.job_id, n.workflow_id
ORDER BY n.job_id
LIMIT :limit
