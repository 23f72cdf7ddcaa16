-- The steps themselves; their dependencies' results come from workflow_upstream.
SELECT job_id, name, deps, recorded, result
FROM workflow_nodes
WHERE job_id IN (SELECT value FROM json_each(:ids))
