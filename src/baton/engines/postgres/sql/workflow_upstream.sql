SELECT e.job_id, d.name AS dep_name, d.recorded AS dep_recorded, d.result::text AS dep_result
FROM baton_workflow_deps e
JOIN workflow_nodes d ON d.job_id = e.dep_job_id
WHERE e.job_id = ANY (%(ids)s::bigint[])
