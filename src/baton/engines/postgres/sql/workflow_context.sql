-- The steps themselves; their dependencies' results come from workflow_upstream (joining
-- here would repeat a fan-in step's whole deps array on every one of its edges).
SELECT job_id, name, deps, recorded, result::text AS result
FROM workflow_nodes
WHERE job_id = ANY (%(ids)s::bigint[])
