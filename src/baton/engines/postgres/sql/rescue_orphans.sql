-- Orphans: executing jobs whose producer row is missing or has not heartbeated within
-- stale_after. Every SET expression reads the row as it was, so the discard test is repeated.
UPDATE baton_jobs
SET state = CASE WHEN (attempt >= max_attempts AND NOT %(retry_exhausted)s::boolean) THEN 'discarded' ELSE 'available' END,
    discarded_at = CASE WHEN (attempt >= max_attempts AND NOT %(retry_exhausted)s::boolean) THEN now() ELSE discarded_at END,
    scheduled_at = CASE WHEN (attempt >= max_attempts AND NOT %(retry_exhausted)s::boolean) THEN scheduled_at ELSE now() END,
    max_attempts = CASE WHEN attempt >= max_attempts AND %(retry_exhausted)s::boolean THEN max_attempts + 1 ELSE max_attempts END,
    meta = meta || CASE WHEN (attempt >= max_attempts AND NOT %(retry_exhausted)s::boolean) THEN jsonb_build_object('repair', 'exhausted')
                        ELSE jsonb_build_object('rescued', coalesce((meta ->> 'rescued')::integer, 0) + 1) END,
    errors = errors || jsonb_build_array(jsonb_build_object(
        'at', now(), 'attempt', attempt, 'traceback', NULL,
        'error', 'orphaned: node ' || coalesce(attempted_by[1], '?') || ' stopped heartbeating while the job was executing'
                 || CASE WHEN (attempt >= max_attempts AND NOT %(retry_exhausted)s::boolean) THEN '; no attempts left, discarded' ELSE '; rescued' END,
        'reason', CASE WHEN (attempt >= max_attempts AND NOT %(retry_exhausted)s::boolean) THEN 'exhausted' ELSE 'orphaned' END))
WHERE id IN (
    SELECT j.id FROM baton_jobs j
    WHERE j.state = 'executing'
      AND NOT EXISTS (
          SELECT 1 FROM baton_producers p
          WHERE p.uuid::text = j.attempted_by[2] AND p.updated_at > now() - make_interval(secs => %(stale)s))
    ORDER BY j.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
  AND state = 'executing'
RETURNING id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at, attempted_by, workflow_id, chain_key
