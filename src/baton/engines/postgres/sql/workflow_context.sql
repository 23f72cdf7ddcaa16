-- baton:prepare (hot path)
-- Fetched steps in one statement: each step's own row (name, deps, the result an earlier
-- attempt recorded, whether it is a graft step, the workflow's context), one row per
-- dependency with its result (joined separately, not on the step's row, which would repeat a
-- fan-in step's whole deps array on every edge), and the "executing" step events sent to every
-- node in batches (baton_notify_steps; delivered at once: this runs in autocommit).
WITH notified AS MATERIALIZED (
    SELECT baton_notify_steps(%(channel)s, ARRAY(
        SELECT json_strip_nulls(json_build_object(
                   'type', 'step', 'workflow_id', n.workflow_id, 'step', n.name, 'job_id', n.job_id,
                   'event', 'executing', 'parent', n.parent))::text
        FROM workflow_nodes n WHERE n.job_id = ANY (%(ids)s::bigint[]) ORDER BY n.job_id)) AS n
)
SELECT n.job_id, false AS is_dep, n.name, n.deps, n.recorded, n.result::text AS result, n.graft, n.parent,
       w.context::text AS context, (SELECT v.n FROM notified v) AS notified
FROM workflow_nodes n
LEFT JOIN baton_workflows w ON w.id = n.workflow_id
WHERE n.job_id = ANY (%(ids)s::bigint[])
UNION ALL
SELECT e.job_id, true, d.name, NULL, d.recorded, d.result::text, d.graft, d.parent, NULL, NULL
FROM baton_workflow_deps e
JOIN workflow_nodes d ON d.job_id = e.dep_job_id
WHERE e.job_id = ANY (%(ids)s::bigint[])
