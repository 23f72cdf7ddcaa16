SELECT n.workflow_id, w.label, n.name, n.job_id, n.reason, n.resolved_at,
       coalesce(j.state, CASE WHEN n.resolution IN ('completed', 'cancelled', 'discarded') THEN n.resolution END, 'deleted') AS state,
       json_extract(j.errors, '$[#-1]') AS last_error
FROM workflow_nodes n
LEFT JOIN baton_workflows w ON w.id = n.workflow_id
LEFT JOIN baton_jobs j ON j.id = n.job_id
WHERE n.workflow_id IN (SELECT value FROM json_each(:ids))
