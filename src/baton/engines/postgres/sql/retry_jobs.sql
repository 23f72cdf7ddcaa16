-- Back to available, or suspended for the workflow steps in `suspend` (their dependencies
-- have not all completed yet: the release of dependents frees them, store.retry.reopen_steps).
UPDATE baton_jobs
SET state = CASE WHEN id = ANY (%(suspend)s::bigint[]) THEN 'suspended' ELSE 'available' END,
    scheduled_at = now(), max_attempts = greatest(max_attempts, attempt + 1),
    completed_at = NULL, cancelled_at = NULL, discarded_at = NULL
WHERE id = ANY (%(ids)s::bigint[]) AND state IN ('completed', 'discarded', 'cancelled', 'retryable')
RETURNING id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at, attempted_by, workflow_id, chain_key
