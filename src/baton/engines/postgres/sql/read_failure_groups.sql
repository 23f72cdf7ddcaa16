-- Failures grouped by worker and exception type, over the newest `scan` retryable and the
-- newest `scan` discarded jobs (bounded work; the page says how many it looked at).
SELECT worker, kind, count(*) FILTER (WHERE state = 'retryable') AS retryable,
       count(*) FILTER (WHERE state = 'discarded') AS discarded,
       max(id) AS last_id, max(at) AS last_at, (array_agg(message ORDER BY id DESC))[1] AS sample
FROM (
    (SELECT id, state, worker, split_part(errors -> -1 ->> 'error', ':', 1) AS kind,
            left(errors -> -1 ->> 'error', 300) AS message, discarded_at AS at
     FROM baton_jobs WHERE state = 'discarded' ORDER BY id DESC LIMIT %(scan)s)
    UNION ALL
    (SELECT id, state, worker, split_part(errors -> -1 ->> 'error', ':', 1) AS kind,
            left(errors -> -1 ->> 'error', 300) AS message, attempted_at AS at
     FROM baton_jobs WHERE state = 'retryable' ORDER BY id DESC LIMIT %(scan)s)
) f
GROUP BY worker, kind
ORDER BY count(*) DESC, worker, kind
LIMIT %(limit)s
