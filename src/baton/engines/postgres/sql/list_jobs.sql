SELECT id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at, attempted_by, workflow_id, chain_key FROM baton_jobs
WHERE (%(ids)s::bigint[] IS NULL OR id = ANY (%(ids)s::bigint[]))
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(worker)s::text IS NULL OR worker = %(worker)s::text)
  AND (%(states)s::text[] IS NULL OR state = ANY (%(states)s::text[]))
  AND (%(workflow_id)s::text IS NULL OR workflow_id = %(workflow_id)s::text)
ORDER BY id DESC
LIMIT %(limit)s
