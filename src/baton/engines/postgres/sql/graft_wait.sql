-- The unresolved dependents of a graft step wait for every step it grafted: one more pending
-- dependency each. Locked in id order, like decrement_pending, so concurrent acks queue up.
WITH d AS (
    SELECT n.job_id FROM baton_workflow_deps e
    JOIN workflow_nodes n ON n.job_id = e.job_id
    WHERE e.dep_job_id = %(graft)s AND n.resolution IS NULL
    ORDER BY n.job_id FOR UPDATE OF n
)
UPDATE workflow_nodes n SET pending = n.pending + %(n)s
FROM d WHERE n.job_id = d.job_id
RETURNING n.job_id
