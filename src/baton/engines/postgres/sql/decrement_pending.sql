-- Count satisfied dependencies down and release the steps left with nothing pending, in one
-- statement (on SQLite release_jobs is a second one: `inline` tells the caller which).
-- The dependents are locked in id order first, so concurrent acks counting down a shared
-- fan-in step queue up instead of deadlocking.
WITH c AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS c(id bigint, n integer)
), locked AS (
    SELECT n.job_id FROM workflow_nodes n JOIN c ON c.id = n.job_id ORDER BY n.job_id FOR UPDATE OF n
), counted AS (
    UPDATE workflow_nodes n SET pending = n.pending - c.n
    FROM c, locked
    WHERE n.job_id = c.id AND locked.job_id = c.id
    RETURNING n.job_id, n.pending
), released AS (
    UPDATE baton_jobs j
    SET state = CASE WHEN j.scheduled_at > now() THEN 'scheduled' ELSE 'available' END,
        scheduled_at = greatest(j.scheduled_at, now())
    FROM counted
    WHERE j.id = counted.job_id AND counted.pending <= 0 AND j.state = 'suspended'
    RETURNING j.id, j.queue, j.state, j.workflow_id
)
SELECT counted.job_id, counted.pending, true AS inline, r.id, r.queue, r.state, r.workflow_id
FROM counted LEFT JOIN released r ON r.id = counted.job_id
