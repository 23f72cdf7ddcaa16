UPDATE baton_jobs
SET state = 'available', scheduled_at = now(), max_attempts = greatest(max_attempts, attempt + 1),
    meta = meta || jsonb_build_object('rescued', CASE WHEN jsonb_typeof(meta -> 'rescued') = 'number' AND meta ->> 'rescued' ~ '^[0-9]{1,9}$' THEN (meta ->> 'rescued')::integer ELSE 0 END + 1),
    errors = errors || jsonb_build_array(jsonb_build_object('at', now(), 'attempt', attempt) || %(error)s::jsonb)
WHERE id = ANY (%(ids)s::bigint[]) AND state = 'executing' AND attempted_by[2] = %(uuid)s::text
RETURNING id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at, attempted_by, workflow_id, chain_key
