SELECT n.workflow_id, n.name, n.deps, n.reason, n.pending, n.recorded, n.result, w.label
FROM workflow_nodes n
LEFT JOIN baton_workflows w ON w.id = n.workflow_id
WHERE n.job_id = :id
