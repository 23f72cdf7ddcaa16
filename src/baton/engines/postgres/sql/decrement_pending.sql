-- Count satisfied dependencies down; the caller releases the steps left with nothing pending
-- (release_jobs). Folding the release into this statement as a CTE made the planner join
-- baton_jobs by a scan: 300+ ms per ack on a 10 000-step fan-in, so it stays separate.
-- The dependents are locked in id order first, so concurrent acks counting down a shared
-- fan-in step queue up instead of deadlocking.
WITH c AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS c(id bigint, n integer)
), locked AS (
    SELECT n.job_id FROM workflow_nodes n JOIN c ON c.id = n.job_id ORDER BY n.job_id FOR UPDATE OF n
)
UPDATE workflow_nodes n SET pending = n.pending - c.n
FROM c, locked
WHERE n.job_id = c.id AND locked.job_id = c.id
RETURNING n.job_id, n.pending
