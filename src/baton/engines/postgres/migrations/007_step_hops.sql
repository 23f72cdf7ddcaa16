-- Workflow hops in as few round trips as their semantics allow (docs/performance.md, #19).
--
-- A step's ack used to be a transaction of seven statements (complete, step stats, resolve,
-- count down, release, notify, commit) and its fetch two (the fetch, then the step's context).
-- These functions do the same work inside the database, so an ack of completed steps is one
-- statement (atomic on its own in autocommit) and a fetch of steps is one statement too. The
-- general ack path (errors, retries, cascades, chains, grafts, logs, usage) still runs
-- statement by statement and calls baton_finish_workflows for its completion claims, so the
-- claim is written once.
--
-- Planning: every statement here looks rows up by key (ids, workflow ids, chain keys) from a
-- handful of values to a few thousand. The functions keep one generic plan each and forbid
-- sequential scans and merge joins (and, but in baton_complete_steps, hash joins): on a fresh
-- table without statistics the planner would otherwise pick a scan of the whole table (or a
-- merge join over a whole index), which is cheap on a small table and ruinous on a large one;
-- an index lookup per key is right at every size. baton_complete_steps keeps hash joins, which
-- its batches of hundreds of acks join faster (many small workflows in bench/hops.py), and
-- statistics from ANALYZE replace its plans as its tables grow.

-- The state of every step of the workflows `p_wids`: its job's, or, for a step whose job was
-- pruned or deleted, its resolution ('deleted' if it has none). Inlined by the planner into
-- its callers (workflow_summary.sql, baton_finish_workflows).
CREATE FUNCTION baton_step_states(p_wids text[]) RETURNS TABLE (workflow_id text, name text, state text)
LANGUAGE sql STABLE AS $$
    SELECT n.workflow_id, n.name,
           coalesce(j.state, CASE WHEN n.resolution IN ('completed', 'cancelled', 'discarded') THEN n.resolution END,
                    'deleted')
    FROM workflow_nodes n
    LEFT JOIN baton_jobs j ON j.id = n.job_id
    WHERE n.workflow_id = ANY (p_wids)
$$;

-- Claim and announce the workflows among `p_wids` whose steps have all resolved: the rows are
-- locked in id order first (of two transactions resolving the last steps at once, the second
-- sees the first's commit, so exactly one finds the workflow finished), the finished payload
-- (label, status, failed_steps, counts) is counted here, the claim is the insert into
-- workflow_completions, and the claimant notifies `p_channel` (delivered on commit; a payload
-- over NOTIFY's limit goes out truncated). Returns the payload of each claimed workflow
-- (workflow_id, label, status, failed_steps, counts).
CREATE FUNCTION baton_finish_workflows(p_wids text[], p_node text, p_origin text, p_channel text)
RETURNS TABLE (workflow_id text, payload text) LANGUAGE plpgsql VOLATILE SET enable_seqscan = off SET enable_mergejoin = off SET enable_hashjoin = off
    SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_done text[];
BEGIN
    PERFORM 1 FROM baton_workflows w WHERE w.id = ANY (p_wids) ORDER BY w.id FOR UPDATE;
    v_done := ARRAY(
        SELECT w.id FROM baton_workflows w
        WHERE w.id = ANY (p_wids)
          AND NOT EXISTS (SELECT 1 FROM workflow_nodes n WHERE n.workflow_id = w.id AND n.resolution IS NULL)
          AND NOT EXISTS (SELECT 1 FROM workflow_completions c WHERE c.workflow_id = w.id)
        ORDER BY w.id);
    IF cardinality(v_done) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH s AS (
        SELECT * FROM baton_step_states(v_done)
    ), summary AS (
        SELECT s.workflow_id,
               CASE WHEN bool_or(s.state IN ('cancelled', 'discarded')) THEN 'failed' ELSE 'completed' END AS status,
               coalesce(json_agg(s.name ORDER BY s.name COLLATE "C") FILTER (WHERE s.state IN ('cancelled', 'discarded')),
                        '[]'::json) AS failed_steps
        FROM s GROUP BY s.workflow_id
    ), counts AS (
        SELECT b.workflow_id, jsonb_object_agg(b.state, b.n) AS counts
        FROM (SELECT s.workflow_id, s.state, count(*) AS n FROM s GROUP BY s.workflow_id, s.state) b
        GROUP BY b.workflow_id
    ), claimed AS (
        INSERT INTO workflow_completions (workflow_id, status, announced_by)
        SELECT m.workflow_id, m.status, p_node FROM summary m
        ON CONFLICT (workflow_id) DO NOTHING
        RETURNING workflow_id
    ), payloads AS (
        SELECT m.workflow_id, json_build_object(
                   'workflow_id', m.workflow_id, 'label', w.label, 'status', m.status,
                   'failed_steps', m.failed_steps, 'counts', k.counts)::text AS payload
        FROM summary m
        JOIN claimed c ON c.workflow_id = m.workflow_id
        JOIN counts k ON k.workflow_id = m.workflow_id
        LEFT JOIN baton_workflows w ON w.id = m.workflow_id
    ), notes AS (  -- the payload with the event's type and origin first, as the Python path sends it
        SELECT p.workflow_id, p.payload,
               '{"type":"finished","origin":' || to_json(p_origin)::text || ',' || substr(p.payload, 2) AS note
        FROM payloads p
    ), notified AS (
        SELECT n.workflow_id, n.payload,
               pg_notify(p_channel, CASE WHEN octet_length(n.note) <= 7000 THEN n.note
                   ELSE json_build_object('type', 'finished', 'origin', p_origin, 'workflow_id', n.workflow_id,
                                          'truncated', true)::text END) AS sent
        FROM notes n ORDER BY n.workflow_id
    )
    SELECT n.workflow_id, n.payload FROM notified n;
END
$$;

-- Chain links by state, so that releasing a chain's next link costs the same at its 5th link as
-- at its 5 000th: the open links (waiting, running, retrying) and the failed ones, by key and
-- id. (baton_jobs_chain_idx holds every link, and a scan of it for the next one read every
-- link the chain had already run.)
CREATE INDEX baton_jobs_chain_open_idx ON baton_jobs (chain_key, id)
    WHERE chain_key IS NOT NULL AND state IN ('available', 'scheduled', 'executing', 'retryable', 'suspended');
CREATE INDEX baton_jobs_chain_failed_idx ON baton_jobs (chain_key, id)
    WHERE chain_key IS NOT NULL AND state IN ('discarded', 'cancelled');

-- Release the oldest waiting link of each chain in `p_keys` (locked by the caller), unless an
-- earlier link is unfinished, or failed and holding the chain (chain_release.sql calls it too).
CREATE FUNCTION baton_release_chains(p_keys text[]) RETURNS TABLE (id bigint, queue text, state text)
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off SET enable_mergejoin = off SET enable_hashjoin = off
    SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    UPDATE baton_jobs j
    SET state = CASE WHEN j.scheduled_at > now() THEN 'scheduled' ELSE 'available' END,
        scheduled_at = greatest(j.scheduled_at, now())
    FROM unnest(p_keys) AS k(key)
    CROSS JOIN LATERAL (
        SELECT b.id FROM baton_jobs b
        WHERE b.chain_key = k.key AND b.state = 'suspended'
        ORDER BY b.id LIMIT 1
    ) AS nxt
    WHERE j.id = nxt.id
      AND NOT EXISTS (
          SELECT 1 FROM baton_jobs b
          WHERE b.chain_key = j.chain_key AND b.id < j.id
            AND b.state IN ('available', 'scheduled', 'executing', 'retryable'))
      AND NOT EXISTS (
          SELECT 1 FROM baton_jobs b
          WHERE b.chain_key = j.chain_key AND b.id < j.id AND b.state IN ('discarded', 'cancelled')
            AND b.meta -> 'chain' ->> ('on_' || b.state) = 'hold')
    RETURNING j.id, j.queue, j.state;
END
$$;

-- The ack of attempts that completed with nothing else to write (no error, meta, logs, usage
-- or graft), at least one of them a workflow step or a chain link: fenced like complete_jobs,
-- then the steps' stats and recorded results, their live "completed" events (`p_events`,
-- built by the caller), their resolution, the count-down of their dependents (locked in id
-- order, so acks counting down one fan-in step queue up instead of deadlocking), the release of
-- dependents with nothing left pending, the completion claim of workflows in which nothing was
-- released, and the release of the next link of each chain (`p_chains`: the chain keys of the
-- acks, locked as lock_keys does, then chain_release.sql). What was released in the queues of
-- `p_take_queues` is then fetched for the acking node's producer of that queue
-- (`p_take_uuids`), at most `p_take_n` each — the slots it set aside — with their context: the
-- next hop needs no fetch. The queues left with available jobs are woken (`p_insert_channel`).
-- Rows, by `kind`: 'acked' (id) per applied ack; 'claimed' (the columns of fetch_jobs) per job
-- fetched for a producer; 'released' (id, queue, state, workflow_id) per other released job;
-- 'finished' (workflow_id, payload) per claimed workflow.
CREATE FUNCTION baton_complete_steps(
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
    SET plan_cache_mode = force_generic_plan AS $$
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
            WHERE j.id = ANY (v_ready) AND j.state = 'suspended'
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
            WHERE j.id = ANY (r_ids) AND j.state = 'available'
              AND NOT EXISTS (
                  SELECT 1 FROM baton_jobs a
                  WHERE a.state = 'available' AND a.queue = j.queue AND a.priority < j.priority)
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
    FROM (SELECT DISTINCT j.queue FROM baton_jobs j WHERE j.id = ANY (r_ids) AND j.state = 'available') q
    ORDER BY q.queue COLLATE "C";
END
$$;

-- The context of fetched steps as one JSON document each, for the fetch to return with the
-- jobs (one round trip instead of two): a step's name, deps, recorded result of an earlier
-- attempt, whether it is a graft step, its grafting parent, the workflow's context and, in
-- `up`, one [name, recorded, result, graft] per dependency. Sends each step's "executing"
-- event. Set-based: one call per fetch, not one per step.
CREATE FUNCTION baton_step_contexts(p_ids bigint[], p_channel text) RETURNS TABLE (job_id bigint, ctx text)
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off SET enable_mergejoin = off SET enable_hashjoin = off
    SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    IF cardinality(p_ids) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT n.job_id,
           json_build_object(
               'name', n.name, 'deps', n.deps, 'recorded', n.recorded, 'result', n.result, 'graft', n.graft,
               'parent', n.parent, 'context', w.context, 'up', u.up)::text
    FROM workflow_nodes n
    LEFT JOIN baton_workflows w ON w.id = n.workflow_id
    LEFT JOIN LATERAL (
        SELECT json_agg(json_build_array(d.name, d.recorded, d.result, d.graft)) AS up
        FROM baton_workflow_deps e JOIN workflow_nodes d ON d.job_id = e.dep_job_id
        WHERE e.job_id = n.job_id
    ) u ON true
    WHERE n.job_id = ANY (p_ids);
    PERFORM pg_notify(p_channel, json_strip_nulls(json_build_object(
               'type', 'step', 'workflow_id', n.workflow_id, 'step', n.name, 'job_id', n.job_id,
               'event', 'executing', 'parent', n.parent))::text)
    FROM workflow_nodes n WHERE n.job_id = ANY (p_ids) ORDER BY n.job_id;
END
$$;
