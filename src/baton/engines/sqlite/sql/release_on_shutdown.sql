UPDATE baton_jobs
SET state = 'available', scheduled_at = ((julianday('now') - 2440587.5) * 86400.0), max_attempts = max(max_attempts, attempt + 1),
    meta = json_set(meta, '$.rescued', CASE WHEN json_type(meta, '$.rescued') = 'integer' AND json_extract(meta, '$.rescued') BETWEEN 0 AND 999999999 THEN json_extract(meta, '$.rescued') ELSE 0 END + 1),
    errors = json_insert(errors, '$[#]', json_set(:error, '$.at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), '$.attempt', attempt))
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'executing'
  AND json_extract(attempted_by, '$[1]') = :uuid
RETURNING id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at, attempted_by, workflow_id, chain_key
