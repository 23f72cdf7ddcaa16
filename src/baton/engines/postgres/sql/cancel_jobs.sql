UPDATE baton_jobs
SET state = 'cancelled', cancelled_at = now(),
    errors = errors || jsonb_build_array(jsonb_build_object('at', now(), 'attempt', attempt) || %(error)s::jsonb),
    meta = CASE WHEN %(repair)s::text IS NULL THEN meta ELSE meta || jsonb_build_object('repair', %(repair)s::text) END
WHERE id = ANY (%(ids)s::bigint[]) AND state NOT IN ('completed', 'discarded', 'cancelled')
RETURNING id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at, attempted_by, workflow_id, chain_key,
          (SELECT n.name FROM workflow_nodes n WHERE n.job_id = baton_jobs.id) AS step
