UPDATE baton_jobs
SET state = CASE WHEN scheduled_at > ((julianday('now') - 2440587.5) * 86400.0) THEN 'scheduled' ELSE 'available' END,
    scheduled_at = max(scheduled_at, ((julianday('now') - 2440587.5) * 86400.0))
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'suspended'
RETURNING id, queue, state, workflow_id
