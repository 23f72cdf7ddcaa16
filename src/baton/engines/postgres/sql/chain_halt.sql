-- A failed link halts its chain: every later waiting link is cancelled.
UPDATE baton_jobs j
SET state = 'cancelled', cancelled_at = now(),
    errors = j.errors || jsonb_build_array(jsonb_build_object('at', now(), 'attempt', j.attempt) || %(error)s::jsonb)
FROM jsonb_to_recordset(%(rows)s::jsonb) AS h(key text, after bigint)
WHERE j.chain_key = h.key AND j.id > h.after AND j.state = 'suspended'
RETURNING j.id, j.state, j.queue, j.worker, j.args, j.meta, j.tags, j.errors, j.attempt, j.max_attempts, j.priority, j.inserted_at, j.scheduled_at, j.attempted_at, j.completed_at, j.cancelled_at, j.discarded_at, j.attempted_by, j.workflow_id, j.chain_key
