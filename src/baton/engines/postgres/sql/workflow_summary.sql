-- The finished-event payload counted in the database: one row per workflow and step state,
-- with the names of the failed steps (a 10 000-step workflow is a few rows, not 10 000).
WITH s AS (
    SELECT n.workflow_id, n.name,
           coalesce(j.state, CASE WHEN n.resolution IN ('completed', 'cancelled', 'discarded') THEN n.resolution END,
                    'deleted') AS state
    FROM workflow_nodes n
    LEFT JOIN baton_jobs j ON j.id = n.job_id
    WHERE n.workflow_id = ANY (%(ids)s::text[])
)
SELECT s.workflow_id, w.label, s.state, count(*) AS n,
       CASE WHEN s.state IN ('cancelled', 'discarded') THEN array_agg(s.name) END AS names
FROM s
LEFT JOIN baton_workflows w ON w.id = s.workflow_id
GROUP BY s.workflow_id, w.label, s.state
