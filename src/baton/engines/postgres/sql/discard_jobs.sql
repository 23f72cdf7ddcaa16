-- Discard jobs by hand (the dashboard): only from states that are waiting to run, guarded by
-- that state, with an error entry saying who discarded them.
UPDATE baton_jobs
SET state = 'discarded', discarded_at = now(),
    errors = errors || jsonb_build_array(jsonb_build_object('at', now(), 'attempt', attempt) || %(error)s::jsonb)
WHERE id = ANY (%(ids)s::bigint[]) AND state IN ('available', 'scheduled', 'retryable', 'suspended')
RETURNING id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at, attempted_by, workflow_id, chain_key,
          (SELECT n.name FROM workflow_nodes n WHERE n.job_id = baton_jobs.id) AS step
