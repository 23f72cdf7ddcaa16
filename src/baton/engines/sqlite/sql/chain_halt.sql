-- A failed link halts its chain: every later waiting link is cancelled.
UPDATE baton_jobs
SET state = 'cancelled', cancelled_at = ((julianday('now') - 2440587.5) * 86400.0),
    errors = json_insert(errors, '$[#]', json_set(:error, '$.at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), '$.attempt', attempt))
WHERE state = 'suspended' AND EXISTS (
    SELECT 1 FROM json_each(:rows) AS h
    WHERE json_extract(h.value, '$.key') = baton_jobs.chain_key AND baton_jobs.id > json_extract(h.value, '$.after'))
RETURNING id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at, attempted_by, workflow_id, chain_key
