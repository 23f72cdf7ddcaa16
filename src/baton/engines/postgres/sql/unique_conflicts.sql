SELECT DISTINCT ON (u.key) u.key AS unique_key, j.id, j.state, j.queue, j.worker, j.args, j.meta, j.tags, j.errors, j.attempt, j.max_attempts, j.priority, j.inserted_at, j.scheduled_at, j.attempted_at, j.completed_at, j.cancelled_at, j.discarded_at, j.attempted_by, j.workflow_id, j.chain_key
FROM jsonb_to_recordset(%(checks)s::jsonb) AS u(key text, states text[], period double precision)
JOIN baton_jobs j ON j.unique_key = u.key
 AND j.state = ANY (u.states)
 AND (u.period IS NULL OR j.inserted_at >= now() - make_interval(secs => u.period))
ORDER BY u.key, j.id
