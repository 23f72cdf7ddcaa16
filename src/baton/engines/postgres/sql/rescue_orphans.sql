-- Orphans: executing jobs whose producer row is missing or has not heartbeated within
-- stale_after. Every SET expression reads the row as it was, so the discard test is repeated.
-- meta.rescued is the user's key too: anything but an integer from 0 to 999999999 counts as 0
-- (job.meta_count), never a cast that fails the whole sweep.
WITH picked AS MATERIALIZED (
    SELECT j.id FROM baton_jobs j
    WHERE j.state = 'executing'
      AND NOT EXISTS (
          SELECT 1 FROM baton_producers p
          WHERE p.uuid::text = j.attempted_by[2]
            AND p.updated_at > now() - make_interval(secs => coalesce((p.meta ->> 'stale_after')::double precision, %(stale)s)))
    ORDER BY j.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE baton_jobs
SET state = CASE WHEN (attempt >= max_attempts AND NOT %(retry_exhausted)s::boolean) THEN 'discarded' ELSE 'available' END,
    discarded_at = CASE WHEN (attempt >= max_attempts AND NOT %(retry_exhausted)s::boolean) THEN now() ELSE discarded_at END,
    scheduled_at = CASE WHEN (attempt >= max_attempts AND NOT %(retry_exhausted)s::boolean) THEN scheduled_at ELSE now() END,
    max_attempts = CASE WHEN attempt >= max_attempts AND %(retry_exhausted)s::boolean THEN max_attempts + 1 ELSE max_attempts END,
    meta = meta || CASE WHEN (attempt >= max_attempts AND NOT %(retry_exhausted)s::boolean) THEN jsonb_build_object('repair', 'exhausted')
                        ELSE jsonb_build_object('rescued', CASE WHEN jsonb_typeof(meta -> 'rescued') = 'number' AND meta ->> 'rescued' ~ '^[0-9]{1,9}$' THEN (meta ->> 'rescued')::integer ELSE 0 END + 1) END,
    errors = errors || jsonb_build_array(jsonb_build_object(
        'at', now(), 'attempt', attempt, 'traceback', NULL,
        'error', 'orphaned: node ' || coalesce(attempted_by[1], '?') || ' stopped heartbeating while the job was executing'
                 || CASE WHEN (attempt >= max_attempts AND NOT %(retry_exhausted)s::boolean) THEN '; no attempts left, discarded' ELSE '; rescued' END,
        'reason', CASE WHEN (attempt >= max_attempts AND NOT %(retry_exhausted)s::boolean) THEN 'exhausted' ELSE 'orphaned' END))
FROM picked
WHERE baton_jobs.id = picked.id AND baton_jobs.state = 'executing'
RETURNING baton_jobs.id, baton_jobs.state, baton_jobs.queue, baton_jobs.worker, baton_jobs.args, baton_jobs.meta, baton_jobs.tags, baton_jobs.errors, baton_jobs.attempt, baton_jobs.max_attempts, baton_jobs.priority, baton_jobs.inserted_at, baton_jobs.scheduled_at, baton_jobs.attempted_at, baton_jobs.completed_at, baton_jobs.cancelled_at, baton_jobs.discarded_at, baton_jobs.attempted_by, baton_jobs.workflow_id, baton_jobs.chain_key,
       (SELECT n.name FROM workflow_nodes n WHERE n.job_id = baton_jobs.id) AS step,
       -- milliseconds since the dead producer's last heartbeat (NULL when its row is gone)
       (SELECT (extract(epoch FROM now() - p.updated_at) * 1000)::float8 FROM baton_producers p
        WHERE p.uuid::text = baton_jobs.attempted_by[2]) AS since_heartbeat
