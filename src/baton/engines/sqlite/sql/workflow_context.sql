-- Fetched steps in one statement: each step's own row (name, deps, the result an earlier
-- attempt recorded, whether it is a graft step, the workflow's context) and one row per
-- dependency with its result. (The "executing" step event is a separate notice row on SQLite.)
SELECT n.job_id, 0 AS is_dep, n.name, n.deps, n.recorded, n.result, n.graft, n.parent, w.context
FROM workflow_nodes n
LEFT JOIN baton_workflows w ON w.id = n.workflow_id
WHERE n.job_id IN (SELECT value FROM json_each(:ids))
UNION ALL
SELECT e.job_id, 1, d.name, NULL, d.recorded, d.result, d.graft, d.parent, NULL
FROM baton_workflow_deps e
JOIN workflow_nodes d ON d.job_id = e.dep_job_id
WHERE e.job_id IN (SELECT value FROM json_each(:ids))
