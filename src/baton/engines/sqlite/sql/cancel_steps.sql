UPDATE baton_jobs
SET state = 'cancelled', cancelled_at = ((julianday('now') - 2440587.5) * 86400.0),
    errors = json_insert(errors, '$[#]', json_set((SELECT json_extract(r.value, '$.error') FROM json_each(:rows) AS r WHERE json_extract(r.value, '$.id') = baton_jobs.id), '$.at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), '$.attempt', attempt)),
    meta = json_set(meta, '$.repair',
        (SELECT json_extract(r.value, '$.reason') FROM json_each(:rows) AS r WHERE json_extract(r.value, '$.id') = baton_jobs.id))
WHERE id IN (SELECT json_extract(value, '$.id') FROM json_each(:rows))
  AND state NOT IN ('completed', 'discarded', 'cancelled')
RETURNING id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at, attempted_by, workflow_id, chain_key
