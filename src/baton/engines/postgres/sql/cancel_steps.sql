WITH r AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(id bigint, reason text, error jsonb)
), prev AS (
    SELECT j.id, j.state FROM baton_jobs j JOIN r ON r.id = j.id
    WHERE j.state NOT IN ('completed', 'discarded', 'cancelled')
    ORDER BY j.id FOR UPDATE OF j
)
UPDATE baton_jobs j
SET state = 'cancelled', cancelled_at = now(),
    errors = j.errors || jsonb_build_array(jsonb_build_object('at', now(), 'attempt', j.attempt) || r.error),
    meta = j.meta || jsonb_build_object('repair', r.reason)
FROM r, prev
WHERE j.id = r.id AND prev.id = r.id
RETURNING j.id, j.state, j.queue, j.worker, j.args, j.meta, j.tags, j.errors, j.attempt, j.max_attempts, j.priority, j.inserted_at, j.scheduled_at, j.attempted_at, j.completed_at, j.cancelled_at, j.discarded_at, j.attempted_by, j.workflow_id, j.chain_key,
          (SELECT n.name FROM workflow_nodes n WHERE n.job_id = j.id) AS step
