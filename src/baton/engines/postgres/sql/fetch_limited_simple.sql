-- baton:prepare (hot path of limited queues)
-- fetch_limited_jobs for limits without partitions: the room the limits leave is one number,
-- so this is the plain fetch with a smaller LIMIT (cheaper to plan and run). Same rows.
WITH clock AS MATERIALIZED (
    SELECT clock_timestamp() AS t  -- after the lock: stamps follow the order of the turns
),
pruned AS (
    DELETE FROM baton_rate_window
    WHERE queue = %(queue)s
      AND started_at <= (SELECT t FROM clock) - make_interval(secs => coalesce(%(rate_period)s::float8, 0))
),
recent AS (
    SELECT coalesce(sum(w.n), 0) AS n, min(w.started_at) AS oldest
    FROM baton_rate_window w, clock
    WHERE %(rate_allowed)s::int IS NOT NULL AND w.queue = %(queue)s
      AND w.started_at > clock.t - make_interval(secs => %(rate_period)s::float8)
),
room AS (
    SELECT greatest(0, least(
        %(limit)s::int,
        %(global_allowed)s::int - (SELECT count(*) FROM baton_jobs WHERE state = 'executing' AND queue = %(queue)s),
        %(rate_allowed)s::int - (SELECT n FROM recent))) AS n
),
picked AS MATERIALIZED (
    SELECT id FROM baton_jobs
    WHERE state = 'available' AND queue = %(queue)s
    ORDER BY priority, scheduled_at, id
    LIMIT (SELECT n FROM room)
    FOR UPDATE SKIP LOCKED
),
fetched AS (
    UPDATE baton_jobs j
    SET state = 'executing', attempt = j.attempt + 1, attempted_at = (SELECT t FROM clock),
        attempted_by = ARRAY[%(node)s::text, %(uuid)s::text]
    WHERE j.id = ANY (ARRAY(SELECT id FROM picked))  -- not a join: the planner cannot size the LIMIT
    RETURNING j.id, j.queue, j.worker, j.args::text AS args, j.meta::text AS meta, j.tags, j.errors::text AS errors,
              j.attempt, j.max_attempts, j.priority, j.inserted_at, j.scheduled_at, j.attempted_at, j.workflow_id,
              j.chain_key
),
started AS (
    INSERT INTO baton_rate_window (queue, key, started_at, n)
    SELECT %(queue)s, '[]', (SELECT t FROM clock), count(*)
    FROM fetched
    WHERE %(rate_allowed)s::int IS NOT NULL
    HAVING count(*) > 0
),
status AS (
    SELECT (SELECT n FROM room) < %(limit)s
               AND EXISTS (SELECT FROM baton_jobs WHERE state = 'available' AND queue = %(queue)s
                           AND id NOT IN (SELECT id FROM picked)) AS capped,
           extract(epoch FROM least((SELECT oldest FROM recent),
                                    (SELECT t FROM clock WHERE EXISTS (SELECT FROM fetched)))
                              + make_interval(secs => %(rate_period)s::float8) - (SELECT t FROM clock))::float8
               AS reopen_in
)
SELECT s.capped, s.reopen_in, f.id, f.queue, f.worker, f.args, f.meta, f.tags, f.errors, f.attempt, f.max_attempts,
       f.priority, f.inserted_at, f.scheduled_at, f.attempted_at, f.workflow_id, f.chain_key
FROM status s LEFT JOIN fetched f ON true
