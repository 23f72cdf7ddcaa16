-- Baton schema, version 8: the summary of a finished workflow without a lookup per step.
--
-- baton_finish_workflows (migration 007) counted the states of a finished workflow's steps by
-- joining each step to its job. Run from a generic plan, that join is only as good as the
-- planner's guess of a workflow's size: with statistics that say "two steps per workflow" it
-- became a nested loop comparing every step with every job of the workflow (124 750 comparisons
-- for 500 steps, 13 ms), and without statistics a walk of the whole job index of workflow_nodes.
-- Now each claimed workflow is counted on its own (LATERAL, kept from being flattened into a
-- join by OFFSET 0): its jobs by state through baton_jobs_workflow_idx, and its steps through
-- the primary key's prefix. A job's workflow_id is always its step's, so when the two totals
-- agree every step has its job and the jobs' states are the steps' states; otherwise (a job
-- deleted or pruned) the steps are read one by one with their jobs (baton_step_states_of), as
-- are the names of the failed steps of a workflow that failed. Same claim, same payload, same
-- notification.
--
-- No JIT compilation in the hop functions: a generic plan's cost estimate (ten workflows of
-- some hundred steps, say) easily passes jit_above_cost, and compiling it took 50-90 ms of a
-- finish that otherwise takes under one.
--
-- The function also no longer returns early when nothing finished, so that one call with an
-- empty list plans every statement of it: the engine makes that call on each new pooled
-- connection, and a connection's first finish costs what the others cost.

-- The state of every step of workflow `p_wid`, each looked up by its job's primary key (the
-- exact count when a workflow's jobs and steps disagree): its job's state, or, for a step whose
-- job was pruned or deleted, its resolution ('deleted' if it has none). Inlined into its callers.
CREATE FUNCTION baton_step_states_of(p_wid text) RETURNS TABLE (name text, state text)
LANGUAGE sql STABLE AS $$
    SELECT n.name,
           coalesce((SELECT j.state FROM baton_jobs j WHERE j.id = n.job_id),
                    CASE WHEN n.resolution IN ('completed', 'cancelled', 'discarded') THEN n.resolution END, 'deleted')
    FROM workflow_nodes n
    WHERE n.workflow_id = p_wid
$$;

CREATE OR REPLACE FUNCTION baton_finish_workflows(p_wids text[], p_node text, p_origin text, p_channel text)
RETURNS TABLE (workflow_id text, payload text) LANGUAGE plpgsql VOLATILE SET enable_seqscan = off SET enable_mergejoin = off
    SET enable_hashjoin = off SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
    RETURN QUERY
    WITH counted AS (
        SELECT d.wid AS workflow_id, f.counts, f.total,
               (SELECT count(*) FROM workflow_nodes n WHERE n.workflow_id = d.wid) AS steps
        FROM unnest(v_done) AS d(wid)
        CROSS JOIN LATERAL (
            SELECT jsonb_object_agg(b.state, b.n) AS counts, sum(b.n) AS total
            FROM (SELECT j.state, count(*) AS n FROM baton_jobs j WHERE j.workflow_id = d.wid
                  GROUP BY j.state OFFSET 0) b
        ) f
    ), summary AS (
        SELECT c.workflow_id, k.counts, k.counts ?| ARRAY['cancelled', 'discarded'] AS failed,
               (SELECT w.label FROM baton_workflows w WHERE w.id = c.workflow_id) AS label
        FROM counted c
        CROSS JOIN LATERAL (
            SELECT CASE WHEN c.total = c.steps THEN c.counts ELSE (
                SELECT jsonb_object_agg(x.state, x.n)
                FROM (SELECT s.state, count(*) AS n FROM baton_step_states_of(c.workflow_id) s GROUP BY s.state) x)
            END AS counts
        ) k
        WHERE k.counts IS NOT NULL  -- a workflow without steps is never claimed (as before)
    ), claimed AS (
        INSERT INTO workflow_completions (workflow_id, status, announced_by)
        SELECT m.workflow_id, CASE WHEN m.failed THEN 'failed' ELSE 'completed' END, p_node FROM summary m
        ON CONFLICT (workflow_id) DO NOTHING
        RETURNING workflow_id
    ), payloads AS MATERIALIZED (  -- built once: notes reads it twice
        SELECT m.workflow_id, json_build_object(
                   'workflow_id', m.workflow_id, 'label', m.label,
                   'status', CASE WHEN m.failed THEN 'failed' ELSE 'completed' END,
                   'failed_steps', CASE WHEN m.failed THEN (
                       SELECT json_agg(s.name ORDER BY s.name COLLATE "C") FROM baton_step_states_of(m.workflow_id) s
                       WHERE s.state IN ('cancelled', 'discarded'))
                       ELSE '[]'::json END,
                   'counts', m.counts)::text AS payload
        FROM summary m
        WHERE m.workflow_id IN (SELECT c.workflow_id FROM claimed c)
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

ALTER FUNCTION baton_complete_steps(bigint[], integer[], text[], text[], text[], bigint[], bigint[], text[], text[],
                                    text[], text[], text[], integer[], text, text, text, text) SET jit = off;
ALTER FUNCTION baton_release_chains(text[]) SET jit = off;
ALTER FUNCTION baton_step_contexts(bigint[], text) SET jit = off;
