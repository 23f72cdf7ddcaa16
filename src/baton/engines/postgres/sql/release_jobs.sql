UPDATE baton_jobs
SET state = CASE WHEN scheduled_at > now() THEN 'scheduled' ELSE 'available' END,
    scheduled_at = greatest(scheduled_at, now())
WHERE id = ANY (%(ids)s::bigint[]) AND state = 'suspended'
RETURNING id, queue, state, workflow_id
