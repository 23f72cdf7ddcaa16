-- Resolve each step once (a step already resolved is left alone, which makes a repeated
-- completion, a manual retry, unable to count its dependents down twice) and return, in the
-- same statement, the unresolved dependents of the steps it resolved (kind 'edge'; on SQLite
-- that is the separate dependents statement).
WITH resolved AS (
    UPDATE workflow_nodes n
    SET resolution = r.outcome, resolved_at = now(), reason = coalesce(r.reason, n.reason)
    FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(id bigint, outcome text, reason text)
    WHERE n.job_id = r.id AND n.resolution IS NULL
    RETURNING n.workflow_id, n.job_id, n.resolution, n.name
)
SELECT 'node' AS kind, workflow_id, job_id, resolution, NULL::text AS dep_resolution, NULL::text AS dep_name,
       NULL::boolean AS ignore_cancelled, NULL::boolean AS ignore_discarded, NULL::boolean AS ignore_deleted
FROM resolved
UNION ALL
SELECT 'edge', NULL, e.job_id, NULL, d.resolution, d.name, n.ignore_cancelled, n.ignore_discarded, n.ignore_deleted
FROM resolved d
-- One index probe per resolved step (OFFSET 0 keeps the planner from flattening it): with
-- skewed edges (10 000 grafted steps all feeding one fan-in step) the statistics otherwise
-- lead it to scan every edge against every resolved step.
CROSS JOIN LATERAL (SELECT e.job_id FROM baton_workflow_deps e WHERE e.dep_job_id = d.job_id OFFSET 0) e
JOIN workflow_nodes n ON n.job_id = e.job_id
WHERE n.resolution IS NULL AND NOT EXISTS (SELECT 1 FROM resolved x WHERE x.job_id = e.job_id)
