UPDATE baton_jobs
SET state = 'discarded', discarded_at = ((julianday('now') - 2440587.5) * 86400.0), meta = json_set(meta, '$.repair', 'exhausted'),
    errors = json_insert(errors, '$[#]', json_object(
        'at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'attempt', attempt, 'traceback', NULL, 'reason', 'exhausted',
        'error', 'available with no attempts left (' || attempt || '/' || max_attempts || '); discarded'))
WHERE id IN (
    SELECT id FROM baton_jobs WHERE state = 'available' AND attempt >= max_attempts ORDER BY id LIMIT :limit)
RETURNING id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at, attempted_by, workflow_id, chain_key,
       (SELECT n.name FROM workflow_nodes n WHERE n.job_id = baton_jobs.id) AS step
