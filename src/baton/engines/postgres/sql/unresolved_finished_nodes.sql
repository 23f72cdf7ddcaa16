-- Steps never resolved although their job is terminal or gone: a missed resolution.
SELECT n.job_id, n.workflow_id, coalesce(j.state, 'deleted') AS outcome
FROM workflow_nodes n
LEFT JOIN baton_jobs j ON j.id = n.job_id
WHERE n.resolution IS NULL AND (j.id IS NULL OR j.state IN ('completed', 'discarded', 'cancelled'))
ORDER BY n.job_id
LIMIT %(limit)s
