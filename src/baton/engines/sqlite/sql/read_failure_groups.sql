-- Failures grouped by worker and exception type over the newest :scan jobs of each failed state.
WITH f AS (
    SELECT * FROM (SELECT id, state, worker, json_extract(errors, '$[#-1].error') AS message, discarded_at AS at
                   FROM baton_jobs WHERE state = 'discarded' ORDER BY id DESC LIMIT :scan)
    UNION ALL
    SELECT * FROM (SELECT id, state, worker, json_extract(errors, '$[#-1].error') AS message, attempted_at AS at
                   FROM baton_jobs WHERE state = 'retryable' ORDER BY id DESC LIMIT :scan)
), k AS (
    SELECT id, state, worker, substr(coalesce(message, ''), 1, 300) AS message, at,
           CASE WHEN instr(coalesce(message, ''), ':') > 0 THEN substr(message, 1, instr(message, ':') - 1)
                ELSE coalesce(message, '') END AS kind
    FROM f
)
SELECT worker, kind, sum(state = 'retryable') AS retryable, sum(state = 'discarded') AS discarded,
       max(id) AS last_id, max(at) AS last_at,
       (SELECT k2.message FROM k k2 WHERE k2.worker = k.worker AND k2.kind = k.kind ORDER BY k2.id DESC LIMIT 1) AS sample
FROM k
GROUP BY worker, kind
ORDER BY count(*) DESC, worker, kind
LIMIT :limit
