-- baton:prepare (hot path)
WITH picked AS MATERIALIZED (
    SELECT id FROM baton_jobs
    WHERE state = 'available' AND queue = %(queue)s
    ORDER BY priority, scheduled_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE baton_jobs j
SET state = 'executing', attempt = j.attempt + 1, attempted_at = now(),
    attempted_by = ARRAY[%(node)s::text, %(uuid)s::text]
FROM picked
WHERE j.id = picked.id
RETURNING j.id, j.state, j.queue, j.worker, j.args, j.meta, j.tags, j.errors, j.attempt, j.max_attempts, j.priority, j.inserted_at, j.scheduled_at, j.attempted_at, j.completed_at, j.cancelled_at, j.discarded_at, j.attempted_by, j.workflow_id, j.chain_key
