UPDATE baton_jobs
SET state = 'discarded', discarded_at = ((julianday('now') - 2440587.5) * 86400.0),
    errors = json_insert(errors, '$[#]', json_set(:error, '$.at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), '$.attempt', attempt))
WHERE id IN (SELECT value FROM json_each(:ids)) AND state IN ('available', 'scheduled', 'retryable', 'suspended')
RETURNING id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at, attempted_by, workflow_id, chain_key,
          (SELECT n.name FROM workflow_nodes n WHERE n.job_id = baton_jobs.id) AS step
