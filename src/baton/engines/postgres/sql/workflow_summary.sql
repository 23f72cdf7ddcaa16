-- The finished-event payload counted in the database: one row per workflow and step state,
-- with the names of the failed steps (a 10 000-step workflow is a few rows, not 10 000). A
-- step's state is baton_step_states_of's, as in the finish of the one-statement hop.
SELECT d.id AS workflow_id, w.label, s.state, count(*) AS n,
       CASE WHEN s.state IN ('cancelled', 'discarded') THEN array_agg(s.name) END AS names
FROM unnest(%(ids)s::text[]) AS d(id)
CROSS JOIN LATERAL baton_step_states_of(d.id) s
LEFT JOIN baton_workflows w ON w.id = d.id
GROUP BY d.id, w.label, s.state
