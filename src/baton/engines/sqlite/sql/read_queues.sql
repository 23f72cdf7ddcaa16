-- Distinct queue names, one index probe per queue (see the PostgreSQL file).
WITH RECURSIVE q(queue) AS (
    SELECT (SELECT queue FROM baton_jobs ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM baton_jobs j WHERE j.queue > q.queue ORDER BY j.queue LIMIT 1)
    FROM q WHERE q.queue IS NOT NULL
)
SELECT queue FROM q WHERE queue IS NOT NULL LIMIT :limit
