-- Suspended steps whose dependencies are all satisfied (a missed release the Lifeline repairs).
SELECT n.workflow_id, n.name, n.job_id FROM workflow_nodes n
JOIN baton_jobs j ON j.id = n.job_id AND j.state = 'suspended'
WHERE n.resolution IS NULL AND n.pending <= 0
ORDER BY n.job_id
LIMIT %(limit)s
