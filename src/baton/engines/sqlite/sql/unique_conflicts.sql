WITH u AS (
    SELECT json_extract(value, '$.key') AS key, json_extract(value, '$.states') AS states, json_extract(value, '$.period') AS period FROM json_each(:checks)
)
SELECT u.key AS unique_key, j.id, j.state, j.queue, j.worker, j.args, j.meta, j.tags, j.errors, j.attempt, j.max_attempts, j.priority, j.inserted_at, j.scheduled_at, j.attempted_at, j.completed_at, j.cancelled_at, j.discarded_at, j.attempted_by, j.workflow_id, j.chain_key
FROM u JOIN baton_jobs j ON j.unique_key = u.key
WHERE j.state IN (SELECT value FROM json_each(u.states))
  AND (u.period IS NULL OR j.inserted_at >= ((julianday('now') - 2440587.5) * 86400.0) - u.period)
ORDER BY u.key, j.id
