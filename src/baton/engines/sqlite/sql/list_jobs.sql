SELECT id, state, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at, attempted_at, completed_at, cancelled_at, discarded_at, attempted_by, workflow_id, chain_key FROM baton_jobs
WHERE (:ids IS NULL OR id IN (SELECT value FROM json_each(:ids)))
  AND (:queue IS NULL OR queue = :queue)
  AND (:worker IS NULL OR worker = :worker)
  AND (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
  AND (:workflow_id IS NULL OR workflow_id = :workflow_id)
ORDER BY id DESC
LIMIT :limit
