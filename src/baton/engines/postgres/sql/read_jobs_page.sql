-- One page of the jobs list, newest first, keyset on id (`before`). Each filter has an index
-- walked in id order (state, queue, worker); the unindexed ones (tag, text in args) only look
-- at ids from `floor` up, so a page never scans more than one window of the table.
SELECT id, state, queue, worker, left(args::text, 240) AS args, tags, attempt, max_attempts, priority,
       inserted_at, scheduled_at, attempted_at, coalesce(completed_at, discarded_at, cancelled_at) AS finished_at,
       left(errors -> -1 ->> 'error', 240) AS last_error, workflow_id
FROM baton_jobs
WHERE (%(state)s::text IS NULL OR state = %(state)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(worker)s::text IS NULL OR worker = %(worker)s::text)
  AND (%(tag)s::text IS NULL OR tags @> ARRAY[%(tag)s::text])
  AND (%(pattern)s::text IS NULL OR args::text ILIKE %(pattern)s::text)
  AND (%(workflow)s::text IS NULL OR workflow_id = %(workflow)s::text)
  AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
  AND (%(floor)s::bigint IS NULL OR id >= %(floor)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s
