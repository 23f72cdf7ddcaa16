-- Baton schema, version 8: the summary of a finished workflow without a lookup per step, and
-- room for heap-only updates of workflow_nodes, and hop lookups by key whatever the planner
-- guessed (no JIT, no walk of the fetch index).
--
-- baton_finish_workflows (migration 007) counted the states of a finished workflow's steps by
-- joining each step to its job, in one statement with the claim and the notification. Run from
-- a generic plan, that join is only as good as the planner's guess of a workflow's size: with
-- statistics that say "two steps per workflow" it became a nested loop comparing every step
-- with every job of the workflow (124 750 comparisons for 500 steps, 13 ms), and without
-- statistics a walk of the whole job index of workflow_nodes. And planning that statement took
-- 2.8 ms — paid on each pooled connection's first finish and again whenever autovacuum's
-- ANALYZE of a table it reads invalidated the plan, which on busy tables is often.
--
-- Now each claimed workflow is counted by baton_step_counts: its jobs by state through
-- baton_jobs_workflow_idx, and its steps through the primary key's prefix. A job's workflow_id
-- is always its step's, so when the two totals agree every step has its job and the jobs'
-- states are the steps' states; otherwise (a job deleted or pruned) the steps are read one by
-- one with their jobs (baton_step_states_of), as are the names of the failed steps of a
-- workflow that failed (baton_failed_steps). Small statements, each planned on its own and
-- only when needed; the same claim, payload and notification as before.
--
-- No JIT compilation in the hop functions: a generic plan's cost estimate (ten workflows of
-- some hundred steps, say) easily passes jit_above_cost, and compiling it took 50-90 ms of a
-- finish that otherwise takes under one.
--
-- baton_finish_workflows no longer returns early when nothing finished, so that one call with
-- an empty list plans every statement of it: the engine makes that call, and one of
-- baton_step_counts, on each new pooled connection.

-- The state of every step of workflow `p_wid`, each looked up by its job's primary key (the
-- exact count when a workflow's jobs and steps disagree): its job's state, or, for a step whose
-- job was pruned or deleted, its resolution ('deleted' if it has none). Inlined into its callers
-- (and workflow_summary.sql). It replaces migration 007's baton_step_states, whose join of all
-- the steps to their jobs was planned as badly as the finish's.
CREATE FUNCTION baton_step_states_of(p_wid text) RETURNS TABLE (name text, state text)
LANGUAGE sql STABLE AS $$
    SELECT n.name,
           coalesce((SELECT j.state FROM baton_jobs j WHERE j.id = n.job_id),
                    CASE WHEN n.resolution IN ('completed', 'cancelled', 'discarded') THEN n.resolution END, 'deleted')
    FROM workflow_nodes n
    WHERE n.workflow_id = p_wid
$$;

DROP FUNCTION baton_step_states(text[]);

-- The steps of workflow `p_wid` counted by state ({state: n}; NULL for a workflow without
-- steps): from its jobs when every step has one, step by step otherwise.
CREATE FUNCTION baton_step_counts(p_wid text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET enable_seqscan = off SET enable_mergejoin = off SET enable_hashjoin = off
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_counts jsonb;
    v_jobs bigint;
    v_steps bigint;
BEGIN
    SELECT jsonb_object_agg(b.state, b.n), sum(b.n) INTO v_counts, v_jobs
    FROM (SELECT j.state, count(*) AS n FROM baton_jobs j WHERE j.workflow_id = p_wid GROUP BY j.state) b;
    SELECT count(*) INTO v_steps FROM workflow_nodes n WHERE n.workflow_id = p_wid;
    IF v_jobs = v_steps THEN
        RETURN v_counts;
    END IF;
    SELECT jsonb_object_agg(b.state, b.n) INTO v_counts
    FROM (SELECT s.state, count(*) AS n FROM baton_step_states_of(p_wid) s GROUP BY s.state) b;
    RETURN v_counts;
END
$$;

-- The names of workflow `p_wid`'s cancelled and discarded steps, in byte order (a JSON array).
CREATE FUNCTION baton_failed_steps(p_wid text) RETURNS json
LANGUAGE plpgsql STABLE SET enable_seqscan = off SET enable_mergejoin = off SET enable_hashjoin = off
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
BEGIN
    RETURN (SELECT coalesce(json_agg(s.name ORDER BY s.name COLLATE "C"), '[]'::json)
            FROM baton_step_states_of(p_wid) s WHERE s.state IN ('cancelled', 'discarded'));
END
$$;

-- Every lookup of a table here is by key (the probes of v_done are scalar subqueries, which the
-- planner cannot turn into joins); the only joins are of the statement's own small CTEs, which
-- a hash join matches in one pass however many workflows finish at once.
CREATE OR REPLACE FUNCTION baton_finish_workflows(p_wids text[], p_node text, p_origin text, p_channel text)
RETURNS TABLE (workflow_id text, payload text) LANGUAGE plpgsql VOLATILE SET enable_seqscan = off SET enable_mergejoin = off
    SET enable_hashjoin = on SET plan_cache_mode = force_generic_plan SET jit = off AS $$
#variable_conflict use_column
DECLARE
    v_done text[];
BEGIN
    PERFORM 1 FROM baton_workflows w WHERE w.id = ANY (p_wids) ORDER BY w.id FOR UPDATE;
    v_done := ARRAY(
        SELECT w.id FROM baton_workflows w
        WHERE w.id = ANY (p_wids)
          AND (SELECT n.job_id FROM workflow_nodes n WHERE n.workflow_id = w.id AND n.resolution IS NULL LIMIT 1) IS NULL
          AND (SELECT c.workflow_id FROM workflow_completions c WHERE c.workflow_id = w.id) IS NULL
        ORDER BY w.id);
    RETURN QUERY
    WITH summary AS MATERIALIZED (  -- counted once each
        SELECT d.wid AS workflow_id, d.n, baton_step_counts(d.wid) AS counts
        FROM unnest(v_done) WITH ORDINALITY AS d(wid, n)
    ), claimed AS (  -- a workflow without steps is never claimed
        INSERT INTO workflow_completions (workflow_id, status, announced_by)
        SELECT m.workflow_id, CASE WHEN m.counts ?| ARRAY['cancelled', 'discarded'] THEN 'failed' ELSE 'completed' END,
               p_node
        FROM summary m WHERE m.counts IS NOT NULL
        ON CONFLICT (workflow_id) DO NOTHING
        RETURNING workflow_id, status
    ), payloads AS MATERIALIZED (  -- built once: notes reads it twice
        SELECT m.workflow_id, m.n, json_build_object(
                   'workflow_id', m.workflow_id,
                   'label', (SELECT w.label FROM baton_workflows w WHERE w.id = m.workflow_id),
                   'status', c.status,
                   'failed_steps', CASE WHEN c.status = 'failed' THEN baton_failed_steps(m.workflow_id) ELSE '[]'::json END,
                   'counts', m.counts)::text AS payload
        FROM claimed c JOIN summary m ON m.workflow_id = c.workflow_id
    ), notes AS (  -- the payload with the event's type and origin first, as the Python path sends it
        SELECT p.workflow_id, p.n, p.payload,
               '{"type":"finished","origin":' || to_json(p_origin)::text || ',' || substr(p.payload, 2) AS note
        FROM payloads p
    ), notified AS (
        SELECT n.workflow_id, n.payload,
               pg_notify(p_channel, CASE WHEN octet_length(n.note) <= 7000 THEN n.note
                   ELSE json_build_object('type', 'finished', 'origin', p_origin, 'workflow_id', n.workflow_id,
                                          'truncated', true)::text END) AS sent
        FROM notes n ORDER BY n.n
    )
    SELECT n.workflow_id, n.payload FROM notified n;
END
$$;

ALTER FUNCTION baton_release_chains(text[]) SET jit = off;
ALTER FUNCTION baton_step_contexts(bigint[], text) SET jit = off;

-- A step's row is written once and then updated: its dependencies' completions count its
-- `pending` down, one update each. That update changes no indexed column, so PostgreSQL can
-- make it a heap-only (HOT) update, without new entries in the table's three indexes — but
-- only when the row's page has room for the new version. Half of each page is left free for
-- that (new pages only; rows written earlier keep theirs): in bench/hops.py's small workflows
-- 46% of workflow_nodes' updates became HOT instead of 6%, and the table ended smaller, since
-- HOT versions are pruned in place instead of spreading over new pages.
ALTER TABLE workflow_nodes SET (fillfactor = 50);

-- baton_complete_steps (migration 007) as it was, but for lookups that its generic plan,
-- made on a young table, turned into walks of baton_jobs_fetch_idx — every available job of
-- every queue — per ack: cheap in a drained queue, a scan of the whole backlog behind a large
-- one (tests/test_workflow_hops.py counts the index reads); and one more that read every
-- `suspended` job of every workflow through baton_jobs_state_idx to release a few. The released
-- steps are now found by `(state = 'suspended') IS TRUE` and `(state = 'available') IS TRUE`,
-- which no index can serve but the primary key; and "no waiting job of higher priority in the
-- queue" reads the queue's best waiting priority, a scalar subquery (ORDER BY priority LIMIT 1)
-- that the planner cannot flatten into an anti-join and that the fetch index answers with its
-- first entry for the queue.
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
) LANGUAGE plpgsql VOLATILE SET enable_seqscan = off SET enable_mergejoin = off
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
    WITH a AS (
        SELECT * FROM unnest(p_ids, p_attempts, p_uuids) AS a(id, attempt, uuid)
    ), u AS (
        UPDATE baton_jobs j SET state = 'completed', completed_at = now()
        FROM a
        WHERE j.id = a.id AND (j.state = 'executing') IS TRUE AND j.attempt = a.attempt AND j.attempted_by[2] = a.uuid
        RETURNING j.id
    )
    SELECT array_agg(u.id ORDER BY u.id) INTO v_done FROM u;
    IF v_done IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT 'acked'::text, d, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
        NULL::text, NULL::text[], NULL::text, NULL::integer, NULL::integer, NULL::smallint, NULL::timestamptz,
        NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::text
    FROM unnest(v_done) AS d;

    -- In one statement: the stats of the applied steps (upsert_step_stats.sql), their live
    -- "completed" events, their recorded results and their resolution (record_results,
    -- resolve_nodes.sql) in one row version — `o`, the row as it was, says which steps this
    -- statement resolved — and the unresolved dependents of those, to count down.
    WITH stats AS (
        INSERT INTO workflow_step_stats (job_id, workflow_id, name, queued_ms, run_ms, attempts, state)
        SELECT r.id, r.workflow_id, r.name, r.queued_ms, r.run_ms, r.attempts, 'completed'
        FROM unnest(p_ids, p_wids, p_names, p_queued, p_run, p_attempts)
            AS r(id, workflow_id, name, queued_ms, run_ms, attempts)
        WHERE r.workflow_id IS NOT NULL AND r.id = ANY (v_done)
        ON CONFLICT (job_id) DO UPDATE
        SET queued_ms = excluded.queued_ms, run_ms = excluded.run_ms, attempts = excluded.attempts,
            state = excluded.state, updated_at = now()
    ), events AS MATERIALIZED (
        SELECT count(pg_notify(p_step_channel, e.payload)) AS n
        FROM (SELECT e.payload FROM unnest(p_ids, p_events) WITH ORDINALITY AS e(id, payload, n)
              WHERE e.payload IS NOT NULL AND e.id = ANY (v_done) ORDER BY e.n) e
    ), r AS (
        SELECT * FROM unnest(p_ids, p_wids, p_results) AS r(id, workflow_id, result)
        WHERE r.workflow_id IS NOT NULL AND r.id = ANY (v_done)
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
        WHERE n.resolution IS NULL AND NOT e.job_id = ANY (v_done)
        GROUP BY e.job_id
    )
    SELECT (SELECT t.wids FROM touched t), array_agg(e.job_id ORDER BY e.job_id), array_agg(e.n ORDER BY e.job_id),
           (SELECT v.n FROM events v)  -- read once, so the events go out even with no dependents
    INTO v_touched, v_dep_ids, v_dep_n, v_events
    FROM edges e;
    IF v_dep_ids IS NOT NULL THEN
        -- The dependents are locked in id order first (decrement_pending.sql).
        WITH c AS (
            SELECT * FROM unnest(v_dep_ids, v_dep_n) AS c(id, n)
        ), locked AS (
            SELECT n.job_id FROM workflow_nodes n WHERE n.job_id = ANY (v_dep_ids) ORDER BY n.job_id FOR UPDATE
        ), counted AS (
            UPDATE workflow_nodes n SET pending = n.pending - c.n
            FROM c, locked l
            WHERE n.job_id = c.id AND l.job_id = c.id
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
    v_touched := ARRAY(SELECT DISTINCT t FROM unnest(v_touched) AS t WHERE NOT t = ANY (coalesce(r_wids, '{}'::text[])));
    IF cardinality(v_touched) > 0 THEN
        RETURN QUERY
        SELECT 'finished'::text, NULL::bigint, NULL::text, NULL::text, f.workflow_id, f.payload, NULL::text,
            NULL::text, NULL::text, NULL::text[], NULL::text, NULL::integer, NULL::integer, NULL::smallint,
            NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::text
        FROM baton_finish_workflows(v_touched, p_node, p_origin, p_step_channel) AS f;
    END IF;

    -- Chains whose link completed (and was applied): release each one's next link.
    c_keys := ARRAY(SELECT DISTINCT k FROM unnest(p_ids, p_chains) AS c(id, k)
                    WHERE k IS NOT NULL AND c.id = ANY (v_done) ORDER BY k);
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
              -- The queue's best waiting priority: the first entry of its part of the fetch
              -- index (ordered so, where any other index would have to sort the queue).
              AND (SELECT a.priority FROM baton_jobs a WHERE a.state = 'available' AND a.queue = j.queue
                   ORDER BY a.priority LIMIT 1) >= j.priority
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
    SELECT 'released'::text, j.id, j.queue, j.state, j.workflow_id, NULL::text, NULL::text, NULL::text,
        NULL::text, NULL::text[], NULL::text, NULL::integer, NULL::integer, NULL::smallint, NULL::timestamptz,
        NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::text
    FROM baton_jobs j WHERE j.id = ANY (r_ids) AND j.state <> 'executing';
    -- Wake the queues left with available jobs. The acking node wakes its own producers when
    -- this returns: the payload names it (store.effects.wake_payload), so it does not fetch twice.
    PERFORM pg_notify(p_insert_channel, CASE WHEN p_origin = '' THEN q.queue
                                             ELSE chr(31) || p_origin || chr(31) || q.queue END)
    FROM (SELECT DISTINCT j.queue FROM baton_jobs j WHERE j.id = ANY (r_ids) AND (j.state = 'available') IS TRUE) q
    ORDER BY q.queue COLLATE "C";
END
$$;
