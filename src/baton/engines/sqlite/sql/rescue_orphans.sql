-- Orphans: executing jobs whose producer row is missing or has not heartbeated within
-- stale_after. Every SET expression reads the row as it was, so the discard test is repeated.
-- meta.rescued is the user's key too: anything but an integer from 0 to 999999999 counts as 0
-- (job.meta_count).
UPDATE baton_jobs
SET state = CASE WHEN (attempt >= max_attempts AND NOT :retry_exhausted) THEN 'discarded' ELSE 'available' END,
    discarded_at = CASE WHEN (attempt >= max_attempts AND NOT :retry_exhausted) THEN ((julianday('now') - 2440587.5) * 86400.0) ELSE discarded_at END,
    scheduled_at = CASE WHEN (attempt >= max_attempts AND NOT :retry_exhausted) THEN scheduled_at ELSE ((julianday('now') - 2440587.5) * 86400.0) END,
    max_attempts = CASE WHEN attempt >= max_attempts AND :retry_exhausted THEN max_attempts + 1 ELSE max_attempts END,
    meta = CASE WHEN (attempt >= max_attempts AND NOT :retry_exhausted) THEN json_set(meta, '$.repair', 'exhausted')
                ELSE json_set(meta, '$.rescued', CASE WHEN json_type(meta, '$.rescued') = 'integer' AND json_extract(meta, '$.rescued') BETWEEN 0 AND 999999999 THEN json_extract(meta, '$.rescued') ELSE 0 END + 1) END,
    errors = json_insert(errors, '$[#]', json_object(
        'at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'attempt', attempt, 'traceback', NULL,
        'error', 'orphaned: node ' || coalesce(json_extract(attempted_by, '$[0]'), '?')
                 || ' stopped heartbeating while the job was executing'
                 || CASE WHEN (attempt >= max_attempts AND NOT :retry_exhausted) THEN '; no attempts left, discarded' ELSE '; rescued' END,
        'reason', CASE WHEN (attempt >= max_attempts AND NOT :retry_exhausted) THEN 'exhausted' ELSE 'orphaned' END))
WHERE id IN (
    SELECT j.id FROM baton_jobs j
    WHERE j.state = 'executing'
      AND NOT EXISTS (
          SELECT 1 FROM baton_producers p
          WHERE p.uuid = json_extract(j.attempted_by, '$[1]')
            AND p.updated_at > ((julianday('now') - 2440587.5) * 86400.0) - coalesce(json_extract(p.meta, '$.stale_after'), :stale))
    ORDER BY j.id
    LIMIT :limit)
RETURNING id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at, attempted_by, workflow_id, chain_key,
       (SELECT n.name FROM workflow_nodes n WHERE n.job_id = baton_jobs.id) AS step,
       -- milliseconds since the dead producer's last heartbeat (NULL when its row is gone)
       (SELECT (((julianday('now') - 2440587.5) * 86400.0) - p.updated_at) * 1000.0 FROM baton_producers p
        WHERE p.uuid = json_extract(baton_jobs.attempted_by, '$[1]')) AS since_heartbeat
