-- baton:prepare (hot path)
-- fetch_jobs, only among jobs after a position in fetch order (see store.transitions.fetch_next).
-- Returns only what the fetch does not already know (state, attempted_by and the end
-- timestamps are set by Job.fetched).
UPDATE baton_jobs
SET state = 'executing', attempt = attempt + 1, attempted_at = ((julianday('now') - 2440587.5) * 86400.0), attempted_by = json_array(:node, :uuid)
WHERE id IN (
    SELECT id FROM baton_jobs
    WHERE state = 'available' AND queue = :queue
      AND (priority, scheduled_at, id) > (:after_priority, :after_scheduled_at, :after_id)
    ORDER BY priority, scheduled_at, id
    LIMIT :limit
)
RETURNING id, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, workflow_id, chain_key
