-- One page of the jobs list, newest first, keyset on id (see the PostgreSQL file).
SELECT id, state, queue, worker, substr(args, 1, 240) AS args, tags, attempt, max_attempts, priority,
       inserted_at, scheduled_at, attempted_at, coalesce(completed_at, discarded_at, cancelled_at) AS finished_at,
       substr(json_extract(errors, '$[#-1].error'), 1, 240) AS last_error, workflow_id
FROM baton_jobs
WHERE (:state IS NULL OR state = :state)
  AND (:queue IS NULL OR queue = :queue)
  AND (:worker IS NULL OR worker = :worker)
  AND (:tag IS NULL OR EXISTS (SELECT 1 FROM json_each(baton_jobs.tags) t WHERE t.value = :tag))
  AND (:pattern IS NULL OR args LIKE :pattern ESCAPE '\')
  AND (:workflow IS NULL OR workflow_id = :workflow)
  AND (:before IS NULL OR id < :before)
  AND (:floor IS NULL OR id >= :floor)
ORDER BY id DESC
LIMIT :limit
