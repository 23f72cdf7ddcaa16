-- The ids of one failure group (worker + exception type) in the given states, newest first.
SELECT id FROM baton_jobs
WHERE state = ANY (%(states)s::text[]) AND worker = %(worker)s
  AND split_part(errors -> -1 ->> 'error', ':', 1) = %(kind)s
  AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s
