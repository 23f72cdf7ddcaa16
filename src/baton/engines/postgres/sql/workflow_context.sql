SELECT n.job_id, n.name, n.deps, n.recorded, n.result::text AS result,
       d.name AS dep_name, d.recorded AS dep_recorded, d.result::text AS dep_result
FROM workflow_nodes n
LEFT JOIN baton_workflow_deps e ON e.job_id = n.job_id
LEFT JOIN workflow_nodes d ON d.job_id = e.dep_job_id
WHERE n.job_id = ANY (%(ids)s::bigint[])
