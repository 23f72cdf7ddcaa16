INSERT INTO workflow_step_stats (job_id, workflow_id, name, queued_ms, run_ms, attempts, state)
SELECT json_extract(value, '$.job_id'), json_extract(value, '$.workflow_id'), json_extract(value, '$.name'), json_extract(value, '$.queued_ms'), json_extract(value, '$.run_ms'), json_extract(value, '$.attempts'), json_extract(value, '$.state')
FROM json_each(:rows) WHERE true
ON CONFLICT (job_id) DO UPDATE
SET queued_ms = excluded.queued_ms, run_ms = excluded.run_ms, attempts = excluded.attempts,
    state = excluded.state, updated_at = ((julianday('now') - 2440587.5) * 86400.0)
