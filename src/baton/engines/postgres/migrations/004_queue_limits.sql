-- Queue limits across nodes (docs/limits.md). The executing count of a limited queue comes
-- from baton_jobs itself (state = 'executing'), so there is no counter to drift. Starts are
-- recorded here instead, because a job's attempted_at only remembers its latest attempt and
-- pruned jobs forget theirs: one row per limited fetch and partition, `n` jobs started at
-- `started_at`, written by the fetch and pruned by age in the same statement.
CREATE TABLE baton_rate_window (
    queue       text        NOT NULL,
    key         text        NOT NULL,
    started_at  timestamptz NOT NULL,
    n           integer     NOT NULL CHECK (n > 0)
);
CREATE INDEX baton_rate_window_idx ON baton_rate_window (queue, started_at);

-- The partition a job falls in, as JSON text: [worker?, value of each key...] (the whole args
-- when `args` is partitioned without keys); '[]' for an unpartitioned limit. One expression
-- without a subquery (hence at most 4 keys), and STABLE like jsonb_build_array (a SQL
-- function claiming more than its body is never inlined), so the planner inlines it into the
-- fetch: ten times cheaper per row than a call.
CREATE FUNCTION baton_partition_key(worker text, args jsonb, fields text[], keys text[]) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN cardinality(fields) = 0 THEN '[]' ELSE
        (CASE WHEN 'worker' = ANY (fields) THEN jsonb_build_array(worker) ELSE '[]'::jsonb END
         || CASE WHEN NOT 'args' = ANY (fields) THEN '[]'::jsonb
                 WHEN cardinality(keys) = 0 THEN jsonb_build_array(args)
                 WHEN cardinality(keys) = 1 THEN jsonb_build_array(args -> keys[1])
                 WHEN cardinality(keys) = 2 THEN jsonb_build_array(args -> keys[1], args -> keys[2])
                 WHEN cardinality(keys) = 3 THEN jsonb_build_array(args -> keys[1], args -> keys[2], args -> keys[3])
                 ELSE jsonb_build_array(args -> keys[1], args -> keys[2], args -> keys[3], args -> keys[4]) END)::text
    END
$$;

-- The limited fetch (docs/limits.md) as functions, so it is one statement and one round trip
-- like the plain fetch, while its query still runs after the queue's lock (see above). Rows:
-- one per fetched job, each carrying `capped` (a limit held jobs back) and `reopen_in`
-- (seconds until the oldest start leaves the rate window); one row with a NULL id when
-- nothing was fetched.

-- Limits without partitions: the room they leave is one number, the LIMIT of the plain fetch.
CREATE FUNCTION baton_fetch_limited_simple(
    p_queue text, p_node text, p_uuid text, p_limit int, p_scan int,
    g_allowed int, g_fields text[], g_keys text[], r_allowed int, r_period float8, r_fields text[], r_keys text[]
) RETURNS TABLE (
    capped boolean, reopen_in float8, id bigint, queue text, worker text, args text, meta text, tags text[],
    errors text, attempt integer, max_attempts integer, priority smallint, inserted_at timestamptz,
    scheduled_at timestamptz, attempted_at timestamptz, workflow_id text, chain_key text
) LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    -- Limited fetches of one queue take turns across nodes: a transaction-scoped lock on the
    -- schema and queue, held until the fetch commits. The query below runs after it with a
    -- snapshot of its own (a VOLATILE function's statements each take one), so it sees every
    -- job the previous turn started.
    PERFORM pg_advisory_xact_lock(hashtextextended('baton.queue_limits.' || current_schema() || '.' || p_queue, 0));
    RETURN QUERY
    WITH clock AS MATERIALIZED (
        SELECT clock_timestamp() AS t  -- after the lock: stamps follow the order of the turns
    ),
    pruned AS (
        DELETE FROM baton_rate_window
        WHERE queue = p_queue
          AND started_at <= (SELECT t FROM clock) - make_interval(secs => coalesce(r_period, 0))
    ),
    recent AS (
        SELECT coalesce(sum(w.n), 0) AS n, min(w.started_at) AS oldest
        FROM baton_rate_window w, clock
        WHERE r_allowed IS NOT NULL AND w.queue = p_queue
          AND w.started_at > clock.t - make_interval(secs => r_period)
    ),
    room AS (
        SELECT greatest(0, least(
            p_limit,
            g_allowed - (SELECT count(*) FROM baton_jobs WHERE state = 'executing' AND queue = p_queue),
            r_allowed - (SELECT n FROM recent))) AS n
    ),
    picked AS MATERIALIZED (
        SELECT id FROM baton_jobs
        WHERE state = 'available' AND queue = p_queue
        ORDER BY priority, scheduled_at, id
        LIMIT (SELECT n FROM room)
        FOR UPDATE SKIP LOCKED
    ),
    fetched AS (
        UPDATE baton_jobs j
        SET state = 'executing', attempt = j.attempt + 1, attempted_at = (SELECT t FROM clock),
            attempted_by = ARRAY[p_node, p_uuid]
        WHERE j.id = ANY (ARRAY(SELECT id FROM picked))  -- not a join: the planner cannot size the LIMIT
        RETURNING j.id, j.queue, j.worker, j.args::text AS args, j.meta::text AS meta, j.tags, j.errors::text AS errors,
                  j.attempt, j.max_attempts, j.priority, j.inserted_at, j.scheduled_at, j.attempted_at, j.workflow_id,
                  j.chain_key
    ),
    started AS (
        INSERT INTO baton_rate_window (queue, key, started_at, n)
        SELECT p_queue, '[]', (SELECT t FROM clock), count(*)
        FROM fetched
        WHERE r_allowed IS NOT NULL
        HAVING count(*) > 0
    ),
    status AS (
        SELECT (SELECT n FROM room) < p_limit
                   AND EXISTS (SELECT FROM baton_jobs WHERE state = 'available' AND queue = p_queue
                               AND id NOT IN (SELECT id FROM picked)) AS capped,
               extract(epoch FROM least((SELECT oldest FROM recent),
                                        (SELECT t FROM clock WHERE EXISTS (SELECT FROM fetched)))
                                  + make_interval(secs => r_period) - (SELECT t FROM clock))::float8
                   AS reopen_in
    )
    SELECT s.capped, s.reopen_in, f.id, f.queue, f.worker, f.args, f.meta, f.tags, f.errors, f.attempt, f.max_attempts,
           f.priority, f.inserted_at, f.scheduled_at, f.attempted_at, f.workflow_id, f.chain_key
    FROM status s LEFT JOIN fetched f ON true;
END
$$;

-- Limits with partitions: each partition gets what its limits leave, among the first p_scan
-- available jobs in fetch order, ranked per partition (rows counted, not positions).
CREATE FUNCTION baton_fetch_limited(
    p_queue text, p_node text, p_uuid text, p_limit int, p_scan int,
    g_allowed int, g_fields text[], g_keys text[], r_allowed int, r_period float8, r_fields text[], r_keys text[]
) RETURNS TABLE (
    capped boolean, reopen_in float8, id bigint, queue text, worker text, args text, meta text, tags text[],
    errors text, attempt integer, max_attempts integer, priority smallint, inserted_at timestamptz,
    scheduled_at timestamptz, attempted_at timestamptz, workflow_id text, chain_key text
) LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    -- Limited fetches of one queue take turns across nodes: a transaction-scoped lock on the
    -- schema and queue, held until the fetch commits. The query below runs after it with a
    -- snapshot of its own (a VOLATILE function's statements each take one), so it sees every
    -- job the previous turn started.
    PERFORM pg_advisory_xact_lock(hashtextextended('baton.queue_limits.' || current_schema() || '.' || p_queue, 0));
    -- When even the whole queue's usage plus this fetch stays within every limit, no partition
    -- can reach its limit: fetch like an unpartitioned queue (scan only what is fetched, no
    -- ranking per partition; starts are still recorded per partition for the rate window).
    -- Only the turns whose fetch could bind pay for partitions.
    IF (g_allowed IS NULL OR g_allowed >= p_limit + (
            SELECT count(*) FROM baton_jobs WHERE state = 'executing' AND queue = p_queue))
       AND (r_allowed IS NULL OR r_allowed >= p_limit + (
            SELECT coalesce(sum(n), 0) FROM baton_rate_window
            WHERE queue = p_queue AND started_at > clock_timestamp() - make_interval(secs => r_period)))
    THEN
        IF r_allowed IS NULL OR cardinality(r_fields) = 0 THEN
            -- Nothing to record per partition either: the unpartitioned fetch, which is half
            -- the cost of the ranking query below (the lock is taken again, harmlessly).
            RETURN QUERY SELECT * FROM baton_fetch_limited_simple(
                p_queue, p_node, p_uuid, p_limit, p_limit, g_allowed, '{}', '{}', r_allowed, r_period, r_fields, r_keys);
            RETURN;
        END IF;
        p_scan := p_limit;
        g_fields := '{}';
        g_keys := '{}';
    END IF;
    RETURN QUERY
    WITH clock AS MATERIALIZED (
        SELECT clock_timestamp() AS t  -- after the lock: stamps follow the order of the turns
    ),
    pruned AS (
        DELETE FROM baton_rate_window
        WHERE queue = p_queue
          AND started_at <= (SELECT t FROM clock) - make_interval(secs => coalesce(r_period, 0))
    ),
    running AS (
        SELECT baton_partition_key(worker, args, g_fields, g_keys) AS key, count(*) AS n
        FROM baton_jobs
        WHERE g_allowed IS NOT NULL AND state = 'executing' AND queue = p_queue
        GROUP BY 1
    ),
    recent AS (
        SELECT w.key, sum(w.n) AS n, min(w.started_at) AS oldest
        FROM baton_rate_window w, clock
        WHERE r_allowed IS NOT NULL AND w.queue = p_queue
          AND w.started_at > clock.t - make_interval(secs => r_period)
        GROUP BY w.key
    ),
    candidates AS MATERIALIZED (
        SELECT id, priority, scheduled_at,
               baton_partition_key(worker, args, g_fields, g_keys) AS gkey,
               baton_partition_key(worker, args, r_fields, r_keys) AS rkey
        FROM baton_jobs
        WHERE state = 'available' AND queue = p_queue
        ORDER BY priority, scheduled_at, id
        LIMIT p_scan
    ),
    under_global AS (
        SELECT c.id, c.priority, c.scheduled_at, c.rkey
        FROM (SELECT *, row_number() OVER (PARTITION BY gkey ORDER BY priority, scheduled_at, id) AS rank
              FROM candidates) c
        LEFT JOIN running r ON r.key = c.gkey
        WHERE g_allowed IS NULL OR c.rank <= g_allowed - coalesce(r.n, 0)
    ),
    under_rate AS (
        SELECT c.id, c.priority, c.scheduled_at, c.rkey
        FROM (SELECT *, row_number() OVER (PARTITION BY rkey ORDER BY priority, scheduled_at, id) AS rank
              FROM under_global) c
        LEFT JOIN recent w ON w.key = c.rkey
        WHERE r_allowed IS NULL OR c.rank <= r_allowed - coalesce(w.n, 0)
    ),
    picked AS (
        SELECT id, rkey FROM under_rate ORDER BY priority, scheduled_at, id LIMIT p_limit
    ),
    locked AS (
        SELECT j.id, p.rkey FROM baton_jobs j JOIN picked p ON p.id = j.id
        WHERE j.state = 'available'
        FOR UPDATE OF j SKIP LOCKED
    ),
    fetched AS (
        UPDATE baton_jobs j
        SET state = 'executing', attempt = j.attempt + 1, attempted_at = (SELECT t FROM clock),
            attempted_by = ARRAY[p_node, p_uuid]
        FROM locked
        WHERE j.id = locked.id
        RETURNING locked.rkey, j.id, j.queue, j.worker, j.args::text AS args, j.meta::text AS meta, j.tags,
                  j.errors::text AS errors, j.attempt, j.max_attempts, j.priority, j.inserted_at, j.scheduled_at,
                  j.attempted_at, j.workflow_id, j.chain_key
    ),
    started AS (
        INSERT INTO baton_rate_window (queue, key, started_at, n)
        SELECT p_queue, f.rkey, (SELECT t FROM clock), count(*)
        FROM fetched f
        WHERE r_allowed IS NOT NULL
        GROUP BY f.rkey
    ),
    status AS (
        SELECT (SELECT count(*) FROM fetched) < p_limit
                   AND (SELECT count(*) FROM candidates) > (SELECT count(*) FROM fetched) AS capped,
               extract(epoch FROM least((SELECT min(oldest) FROM recent),
                                        (SELECT t FROM clock WHERE EXISTS (SELECT FROM fetched)))
                                  + make_interval(secs => r_period) - (SELECT t FROM clock))::float8
                   AS reopen_in
    )
    SELECT s.capped, s.reopen_in, f.id, f.queue, f.worker, f.args, f.meta, f.tags, f.errors, f.attempt, f.max_attempts,
           f.priority, f.inserted_at, f.scheduled_at, f.attempted_at, f.workflow_id, f.chain_key
    FROM status s LEFT JOIN fetched f ON true;
END
$$;
