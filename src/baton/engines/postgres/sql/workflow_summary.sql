-- The finished-event payload counted in the database: one row per workflow and step state,
-- with the names of the failed steps (a 10 000-step workflow is a few rows, not 10 000).
SELECT s.workflow_id, w.label, s.state, count(*) AS n,
       CASE WHEN s.state IN ('cancelled', 'discarded') THEN array_agg(s.name) END AS names
FROM baton_step_states(%(ids)s::text[]) s
LEFT JOIN baton_workflows w ON w.id = s.workflow_id
GROUP BY s.workflow_id, w.label, s.state
