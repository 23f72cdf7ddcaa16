-- baton:prepare (hot path)
-- Every ack is fenced: it applies only while the job is still executing the same attempt for
-- the same producer. Rows that do not match (rescued, cancelled) are simply not returned.
-- The fence is one join condition `(...) IS TRUE`, which keeps the planner on the primary key
-- (complete_jobs.sql says why).
WITH a AS (
    SELECT * FROM jsonb_to_recordset(%(acks)s::jsonb) AS a(
        id bigint, attempt integer, uuid text, state text, delay double precision,
        error jsonb, extra integer, meta jsonb)
)
UPDATE baton_jobs j
SET state = a.state,
    completed_at = CASE WHEN a.state = 'completed' THEN now() ELSE j.completed_at END,
    cancelled_at = CASE WHEN a.state = 'cancelled' THEN now() ELSE j.cancelled_at END,
    discarded_at = CASE WHEN a.state = 'discarded' THEN now() ELSE j.discarded_at END,
    scheduled_at = CASE WHEN a.state IN ('retryable', 'scheduled')
                        THEN now() + make_interval(secs => a.delay) ELSE j.scheduled_at END,
    errors = CASE WHEN a.error IS NULL THEN j.errors
                  ELSE j.errors || jsonb_build_array(jsonb_build_object('at', now(), 'attempt', j.attempt) || a.error) END,
    max_attempts = j.max_attempts + coalesce(a.extra, 0),
    meta = coalesce(a.meta, j.meta)
FROM a
WHERE j.id = a.id AND (j.state = 'executing' AND j.attempt = a.attempt AND j.attempted_by[2] = a.uuid) IS TRUE
RETURNING j.id
