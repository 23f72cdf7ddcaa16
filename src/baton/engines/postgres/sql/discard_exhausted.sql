UPDATE baton_jobs
SET state = 'discarded', discarded_at = now(), meta = meta || jsonb_build_object('repair', 'exhausted'),
    errors = errors || jsonb_build_array(jsonb_build_object(
        'at', now(), 'attempt', attempt, 'traceback', NULL, 'reason', 'exhausted',
        'error', 'available with no attempts left (' || attempt || '/' || max_attempts || '); discarded'))
WHERE id IN (
    SELECT id FROM baton_jobs WHERE state = 'available' AND attempt >= max_attempts
    ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at, attempted_by, workflow_id, chain_key
