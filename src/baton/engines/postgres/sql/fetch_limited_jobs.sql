-- baton:prepare (hot path of limited queues)
-- The fetch of a queue with a global or rate limit (docs/limits.md), run after lock_queue in
-- the same transaction. Executing jobs are counted from baton_jobs (per partition), starts
-- from baton_rate_window; each partition gets at most what its limits leave, the whole fetch
-- at most %(limit)s (this node's free slots). Every row carries `capped` (jobs were held
-- back by a limit) and `reopen_in` (seconds until the oldest start leaves the window);
-- when nothing is fetched there is one row whose id is NULL.
WITH clock AS MATERIALIZED (
    SELECT clock_timestamp() AS t  -- after the lock: stamps follow the order of the turns
),
pruned AS (
    DELETE FROM baton_rate_window
    WHERE queue = %(queue)s
      AND started_at <= (SELECT t FROM clock) - make_interval(secs => coalesce(%(rate_period)s::float8, 0))
),
running AS (
    SELECT baton_partition_key(worker, args, %(global_fields)s::text[], %(global_keys)s::text[]) AS key, count(*) AS n
    FROM baton_jobs
    WHERE %(global_allowed)s::int IS NOT NULL AND state = 'executing' AND queue = %(queue)s
    GROUP BY 1
),
recent AS (
    SELECT w.key, sum(w.n) AS n, min(w.started_at) AS oldest
    FROM baton_rate_window w, clock
    WHERE %(rate_allowed)s::int IS NOT NULL AND w.queue = %(queue)s
      AND w.started_at > clock.t - make_interval(secs => %(rate_period)s::float8)
    GROUP BY w.key
),
candidates AS MATERIALIZED (
    SELECT id, priority, scheduled_at,
           baton_partition_key(worker, args, %(global_fields)s::text[], %(global_keys)s::text[]) AS gkey,
           baton_partition_key(worker, args, %(rate_fields)s::text[], %(rate_keys)s::text[]) AS rkey
    FROM baton_jobs
    WHERE state = 'available' AND queue = %(queue)s
    ORDER BY priority, scheduled_at, id
    LIMIT %(scan)s
),
under_global AS (
    SELECT c.id, c.priority, c.scheduled_at, c.rkey
    FROM (SELECT *, row_number() OVER (PARTITION BY gkey ORDER BY priority, scheduled_at, id) AS rank
          FROM candidates) c
    LEFT JOIN running r ON r.key = c.gkey
    WHERE %(global_allowed)s::int IS NULL OR c.rank <= %(global_allowed)s::int - coalesce(r.n, 0)
),
under_rate AS (
    SELECT c.id, c.priority, c.scheduled_at, c.rkey
    FROM (SELECT *, row_number() OVER (PARTITION BY rkey ORDER BY priority, scheduled_at, id) AS rank
          FROM under_global) c
    LEFT JOIN recent w ON w.key = c.rkey
    WHERE %(rate_allowed)s::int IS NULL OR c.rank <= %(rate_allowed)s::int - coalesce(w.n, 0)
),
picked AS (
    SELECT id, rkey FROM under_rate ORDER BY priority, scheduled_at, id LIMIT %(limit)s
),
locked AS (
    SELECT j.id, p.rkey FROM baton_jobs j JOIN picked p ON p.id = j.id
    WHERE j.state = 'available'
    FOR UPDATE OF j SKIP LOCKED
),
fetched AS (
    UPDATE baton_jobs j
    SET state = 'executing', attempt = j.attempt + 1, attempted_at = (SELECT t FROM clock),
        attempted_by = ARRAY[%(node)s::text, %(uuid)s::text]
    FROM locked
    WHERE j.id = locked.id
    RETURNING locked.rkey, j.id, j.queue, j.worker, j.args::text AS args, j.meta::text AS meta, j.tags,
              j.errors::text AS errors, j.attempt, j.max_attempts, j.priority, j.inserted_at, j.scheduled_at,
              j.attempted_at, j.workflow_id, j.chain_key
),
started AS (
    INSERT INTO baton_rate_window (queue, key, started_at, n)
    SELECT %(queue)s, f.rkey, (SELECT t FROM clock), count(*)
    FROM fetched f
    WHERE %(rate_allowed)s::int IS NOT NULL
    GROUP BY f.rkey
),
status AS (
    SELECT (SELECT count(*) FROM fetched) < %(limit)s
               AND (SELECT count(*) FROM candidates) > (SELECT count(*) FROM fetched) AS capped,
           extract(epoch FROM least((SELECT min(oldest) FROM recent),
                                    (SELECT t FROM clock WHERE EXISTS (SELECT FROM fetched)))
                              + make_interval(secs => %(rate_period)s::float8) - (SELECT t FROM clock))::float8
               AS reopen_in
)
SELECT s.capped, s.reopen_in, f.id, f.queue, f.worker, f.args, f.meta, f.tags, f.errors, f.attempt, f.max_attempts,
       f.priority, f.inserted_at, f.scheduled_at, f.attempted_at, f.workflow_id, f.chain_key
FROM status s LEFT JOIN fetched f ON true
