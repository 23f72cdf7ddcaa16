-- Baton schema, version 11: a hop tests "was this ack applied" by hash, not by reading the
-- whole list of applied acks for each row; it returns its acks and releases as one row each,
-- not one row per job; and a fetch of workflow steps reads each step's node once.
--
-- baton_complete_steps (migration 010) filtered the batch's arrays, and the dependents it counts
-- down, with `id = ANY (v_done)`: under the function's generic plan v_done is a parameter, which
-- PostgreSQL compares element by element (it hashes only a constant array). A batch of n acks
-- therefore cost about n^2 / 2 comparisons per filter, and n x (n x dependents) for the
-- dependents: for 1 000 acked workflow steps with 6 600 edges, 22 of the statement's 44 ms
-- (auto_explain in bench/hops.py's small workflows). Each test is now an uncorrelated
-- `IN (SELECT unnest(...))`, which the planner runs as a hashed subplan: the applied ids are
-- hashed once per statement and each row probes the hash. Kept out of the top level of the
-- WHERE clause (`IS TRUE`, `NOT`) so the planner does not turn it into a join instead.
-- Same for the workflows a batch released steps in (v_touched minus r_wids) and for the chains
-- whose links were applied.
--
-- The function also returned a 19-column row for every ack that applied and for every step it
-- released; the acking node built a dict of each and read one or two of its columns. Now the
-- applied acks come back as one 'acked' row whose `payload` lists their ids ("12,13,14"), and
-- the released jobs not handed over as one 'released' row per queue and state, their ids in
-- `payload` the same way.
--
-- baton_step_contexts (migration 009) read each fetched step's node twice: once for its
-- context, once for its "executing" event. It now builds both from one read.
--
-- The function is otherwise as in migration 010, restated whole (migrations are append-only).

CREATE OR REPLACE FUNCTION baton_complete_steps(
    p_ids bigint[], p_attempts integer[], p_uuids text[], p_wids text[], p_names text[],
    p_queued bigint[], p_run bigint[], p_results text[], p_events text[],
    p_chains text[], p_take_queues text[], p_take_uuids text[], p_take_n integer[],
    p_node text, p_origin text, p_step_channel text, p_insert_channel text
) RETURNS TABLE (
    kind text, id bigint, queue text, state text, workflow_id text, payload text,
    worker text, args text, meta text, tags text[], errors text, attempt integer, max_attempts integer,
    priority smallint, inserted_at timestamptz, scheduled_at timestamptz, attempted_at timestamptz,
    chain_key text, ctx text
) LANGUAGE plpgsql VOLATILE SET enable_seqscan = off SET enable_mergejoin = off SET enable_hashjoin = off
    SET random_page_cost = 1.1 SET plan_cache_mode = force_generic_plan SET jit = off AS $$
#variable_conflict use_column
DECLARE
    v_done bigint[];
    v_touched text[];
    v_dep_ids bigint[];
    v_dep_n integer[];
    v_events bigint;
    v_ready bigint[];
    r_ids bigint[];
    r_wids text[];
    c_ids bigint[];
    c_keys text[];
BEGIN
    -- `(state = 'executing') IS TRUE` keeps the planner on the primary key (complete_jobs.sql).
    -- One ack (a sequential hop) by its key: joined to the unnested arrays, the generic plan of
    -- a young table walks the whole primary key instead (every job, for one).
    IF cardinality(p_ids) = 1 THEN
        UPDATE baton_jobs j SET state = 'completed', completed_at = now()
        WHERE j.id = p_ids[1] AND (j.state = 'executing') IS TRUE AND j.attempt = p_attempts[1]
          AND j.attempted_by[2] = p_uuids[1]
        RETURNING ARRAY[j.id] INTO v_done;
    ELSE
        WITH a AS (
            SELECT * FROM unnest(p_ids, p_attempts, p_uuids) AS a(id, attempt, uuid)
        ), u AS (
            UPDATE baton_jobs j SET state = 'completed', completed_at = now()
            FROM a
            WHERE j.id = a.id AND (j.state = 'executing') IS TRUE AND j.attempt = a.attempt AND j.attempted_by[2] = a.uuid
            RETURNING j.id
        )
        SELECT array_agg(u.id ORDER BY u.id) INTO v_done FROM u;
    END IF;
    IF v_done IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT 'acked'::text, NULL::bigint, NULL::text, NULL::text, NULL::text, array_to_string(v_done, ','),
        NULL::text, NULL::text, NULL::text, NULL::text[], NULL::text, NULL::integer, NULL::integer, NULL::smallint,
        NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::text;

    -- In one statement: the stats of the applied steps (upsert_step_stats.sql), their live
    -- "completed" events, their recorded results and their resolution (record_results,
    -- resolve_nodes.sql) in one row version — `o`, the row as it was, says which steps this
    -- statement resolved — and the unresolved dependents of those, to count down.
    WITH stats AS (
        INSERT INTO workflow_step_stats (job_id, workflow_id, name, queued_ms, run_ms, attempts, state)
        SELECT r.id, r.workflow_id, r.name, r.queued_ms, r.run_ms, r.attempts, 'completed'
        FROM unnest(p_ids, p_wids, p_names, p_queued, p_run, p_attempts)
            AS r(id, workflow_id, name, queued_ms, run_ms, attempts)
        WHERE r.workflow_id IS NOT NULL AND (r.id IN (SELECT unnest(v_done))) IS TRUE
        ON CONFLICT (job_id) DO UPDATE
        SET queued_ms = excluded.queued_ms, run_ms = excluded.run_ms, attempts = excluded.attempts,
            state = excluded.state, updated_at = now()
    ), events AS MATERIALIZED (
        SELECT baton_notify_steps(p_step_channel, ARRAY(
            SELECT e.payload FROM unnest(p_ids, p_events) WITH ORDINALITY AS e(id, payload, n)
            WHERE e.payload IS NOT NULL AND (e.id IN (SELECT unnest(v_done))) IS TRUE ORDER BY e.n)) AS n
    ), r AS (
        SELECT * FROM unnest(p_ids, p_wids, p_results) AS r(id, workflow_id, result)
        WHERE r.workflow_id IS NOT NULL AND (r.id IN (SELECT unnest(v_done))) IS TRUE
    ), updated AS (
        UPDATE workflow_nodes n
        SET recorded = n.recorded OR r.result IS NOT NULL,
            result = CASE WHEN r.result IS NOT NULL THEN r.result::jsonb ELSE n.result END,
            resolution = coalesce(n.resolution, 'completed'),
            resolved_at = CASE WHEN n.resolution IS NULL THEN now() ELSE n.resolved_at END
        FROM r, workflow_nodes o
        WHERE n.job_id = r.id AND o.job_id = r.id AND (n.resolution IS NULL OR r.result IS NOT NULL)
        RETURNING n.workflow_id, n.job_id, o.resolution IS NULL AS fresh
    ), resolved AS (
        SELECT u.workflow_id, u.job_id FROM updated u WHERE u.fresh
    ), touched AS (
        SELECT array_agg(DISTINCT r.workflow_id) AS wids FROM resolved r
    ), edges AS (
        SELECT e.job_id, count(*)::integer AS n
        FROM resolved d
        CROSS JOIN LATERAL (SELECT e.job_id FROM baton_workflow_deps e WHERE e.dep_job_id = d.job_id OFFSET 0) e
        JOIN workflow_nodes n ON n.job_id = e.job_id
        WHERE (n.resolution IS NULL) IS TRUE AND NOT (e.job_id IN (SELECT unnest(v_done)))  -- by key (not the unresolved index)
        GROUP BY e.job_id
    )
    SELECT (SELECT t.wids FROM touched t), array_agg(e.job_id ORDER BY e.job_id), array_agg(e.n ORDER BY e.job_id),
           (SELECT v.n FROM events v)  -- read once, so the events go out even with no dependents
    INTO v_touched, v_dep_ids, v_dep_n, v_events
    FROM edges e;
    IF v_dep_ids IS NOT NULL THEN
        -- The dependents are locked in id order first (decrement_pending.sql), then counted
        -- down by key.
        PERFORM 1 FROM workflow_nodes n WHERE n.job_id = ANY (v_dep_ids) ORDER BY n.job_id FOR UPDATE;
        WITH c AS (
            SELECT * FROM unnest(v_dep_ids, v_dep_n) AS c(id, n)
        ), counted AS (
            UPDATE workflow_nodes n SET pending = n.pending - c.n
            FROM c
            WHERE n.job_id = c.id
            RETURNING n.job_id, n.pending
        )
        SELECT array_agg(c.job_id ORDER BY c.job_id) INTO v_ready FROM counted c WHERE c.pending <= 0;
    END IF;

    -- Release the steps with nothing left pending (release_jobs.sql).
    IF v_ready IS NOT NULL THEN
        WITH rel AS (
            UPDATE baton_jobs j
            SET state = CASE WHEN j.scheduled_at > now() THEN 'scheduled' ELSE 'available' END,
                scheduled_at = greatest(j.scheduled_at, now())
            WHERE j.id = ANY (v_ready) AND (j.state = 'suspended') IS TRUE  -- by primary key
            RETURNING j.id, j.workflow_id
        )
        SELECT array_agg(rel.id), array_agg(DISTINCT rel.workflow_id) INTO r_ids, r_wids FROM rel;
    END IF;

    -- Workflows in which a step was just released cannot have finished; the others may have.
    v_touched := ARRAY(SELECT DISTINCT t FROM unnest(v_touched) AS t WHERE NOT (t IN (SELECT unnest(r_wids))));
    IF cardinality(v_touched) > 0 THEN
        RETURN QUERY
        SELECT 'finished'::text, NULL::bigint, NULL::text, NULL::text, f.workflow_id, f.payload, NULL::text,
            NULL::text, NULL::text, NULL::text[], NULL::text, NULL::integer, NULL::integer, NULL::smallint,
            NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::text
        FROM baton_finish_workflows(v_touched, p_node, p_origin, p_step_channel) AS f;
    END IF;

    -- Chains whose link completed (and was applied): release each one's next link.
    c_keys := ARRAY(SELECT DISTINCT k FROM unnest(p_ids, p_chains) AS c(id, k)
                    WHERE k IS NOT NULL AND (c.id IN (SELECT unnest(v_done))) IS TRUE ORDER BY k);
    IF cardinality(c_keys) > 0 THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('c:' || k, 0)) FROM unnest(c_keys) WITH ORDINALITY AS t(k, n)
        ORDER BY n;
        SELECT array_agg(c.id) INTO c_ids FROM baton_release_chains(c_keys) AS c;
    END IF;
    r_ids := coalesce(r_ids, '{}'::bigint[]) || coalesce(c_ids, '{}'::bigint[]);
    IF cardinality(r_ids) = 0 THEN
        RETURN;
    END IF;

    -- What was released in the acking node's queues starts there, up to the slots it set aside
    -- (`p_take_*`): fetched as fetch_jobs.sql would (available -> executing, by id per queue),
    -- unless a job of higher priority waits in the queue (a fetch takes that one first). They
    -- come back with their context; the next hop needs no fetch.
    IF cardinality(p_take_queues) > 0 THEN
        RETURN QUERY
        WITH t AS (
            SELECT * FROM unnest(p_take_queues, p_take_uuids, p_take_n) AS t(queue, uuid, n)
        ), ranked AS (
            SELECT j.id, t.uuid, t.n, row_number() OVER (PARTITION BY j.queue ORDER BY j.id) AS rank
            FROM baton_jobs j JOIN t ON t.queue = j.queue
            WHERE j.id = ANY (r_ids) AND (j.state = 'available') IS TRUE
              -- No job of higher priority waits in the queue: a probe of the fetch index's
              -- range before this job's priority, empty in the usual case of one priority.
              -- (Reading the queue's first entry instead stepped over every step taken since
              -- the oldest open snapshot: entries nobody may remove yet, one per earlier hop.)
              AND (SELECT 1 FROM baton_jobs a
                   WHERE a.state = 'available' AND a.queue = j.queue AND a.priority < j.priority
                   LIMIT 1) IS NULL
        ), claimed AS (
            UPDATE baton_jobs j
            SET state = 'executing', attempt = j.attempt + 1, attempted_at = now(),
                attempted_by = ARRAY[p_node, r.uuid]
            FROM ranked r
            WHERE j.id = r.id AND r.rank <= r.n
            RETURNING j.*
        )
        SELECT 'claimed'::text, c.id, c.queue, c.state, c.workflow_id, NULL::text, c.worker, c.args::text,
            c.meta::text, c.tags, c.errors::text, c.attempt, c.max_attempts, c.priority, c.inserted_at,
            c.scheduled_at, c.attempted_at, c.chain_key, x.ctx
        FROM claimed c
        LEFT JOIN baton_step_contexts(ARRAY(SELECT s.id FROM claimed s WHERE s.workflow_id IS NOT NULL), p_step_channel) x
            ON x.job_id = c.id;
    END IF;
    RETURN QUERY
    SELECT 'released'::text, NULL::bigint, j.queue, j.state, NULL::text, string_agg(j.id::text, ',' ORDER BY j.id),
        NULL::text, NULL::text, NULL::text, NULL::text[], NULL::text, NULL::integer, NULL::integer, NULL::smallint,
        NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::text
    FROM baton_jobs j WHERE j.id = ANY (r_ids) AND j.state <> 'executing'
    GROUP BY j.queue, j.state;
    -- Wake the queues left with available jobs. The acking node wakes its own producers when
    -- this returns: the payload names it (store.effects.wake_payload), so it does not fetch twice.
    PERFORM pg_notify(p_insert_channel, CASE WHEN p_origin = '' THEN q.queue
                                             ELSE chr(31) || p_origin || chr(31) || q.queue END)
    FROM (SELECT DISTINCT j.queue FROM baton_jobs j WHERE j.id = ANY (r_ids) AND (j.state = 'available') IS TRUE) q
    ORDER BY q.queue COLLATE "C";
END
$$;

CREATE OR REPLACE FUNCTION baton_step_contexts(p_ids bigint[], p_channel text) RETURNS TABLE (job_id bigint, ctx text)
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off SET enable_mergejoin = off SET enable_hashjoin = off
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
#variable_conflict use_column
BEGIN
    IF cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH c AS MATERIALIZED (
        SELECT n.job_id, n.workflow_id, n.name, n.parent,
               json_build_object(
                   'name', n.name, 'deps', n.deps, 'recorded', n.recorded, 'result', n.result, 'graft', n.graft,
                   'parent', n.parent, 'context', w.context, 'up', u.up)::text AS ctx
        FROM workflow_nodes n
        LEFT JOIN baton_workflows w ON w.id = n.workflow_id
        LEFT JOIN LATERAL (
            SELECT json_agg(json_build_array(d.name, d.recorded, d.result, d.graft)) AS up
            FROM baton_workflow_deps e JOIN workflow_nodes d ON d.job_id = e.dep_job_id
            WHERE e.job_id = n.job_id
        ) u ON true
        WHERE n.job_id = ANY (p_ids)
    ), events AS MATERIALIZED (
        SELECT baton_notify_steps(p_channel, ARRAY(
            SELECT json_strip_nulls(json_build_object(
                       'type', 'step', 'workflow_id', c.workflow_id, 'step', c.name, 'job_id', c.job_id,
                       'event', 'executing', 'parent', c.parent))::text
            FROM c ORDER BY c.job_id)) AS n
    )
    SELECT c.job_id, c.ctx FROM c
    WHERE (SELECT v.n FROM events v) >= 0;  -- read once, so the events go out with the contexts
END
$$;
