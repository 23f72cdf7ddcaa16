-- Distinct queue names by skipping through the (queue, state, id) index: one probe per queue
-- instead of a scan of every job (`SELECT DISTINCT queue` reads the whole table).
WITH RECURSIVE q AS (
    (SELECT queue FROM baton_jobs ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM baton_jobs j WHERE j.queue > q.queue ORDER BY j.queue LIMIT 1)
    FROM q WHERE q.queue IS NOT NULL
)
SELECT queue FROM q WHERE queue IS NOT NULL LIMIT %(limit)s
