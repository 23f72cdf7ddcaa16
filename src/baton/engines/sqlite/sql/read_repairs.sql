SELECT id, state, queue, worker, workflow_id, json_extract(meta, '$.repair') AS repair,
       CASE WHEN json_type(meta, '$.rescued') = 'integer' AND json_extract(meta, '$.rescued') BETWEEN 0 AND 999999999 THEN json_extract(meta, '$.rescued') ELSE 0 END AS rescued,
       json_extract(errors, '$[#-1].error') AS last_error, json_extract(errors, '$[#-1].reason') AS last_reason,
       json_extract(errors, '$[#-1].at') AS last_at,
       (SELECT n.name FROM workflow_nodes n WHERE n.job_id = baton_jobs.id) AS step
FROM baton_jobs
WHERE (json_extract(meta, '$.repair') IS NOT NULL OR json_extract(meta, '$.rescued') IS NOT NULL)
  AND (:before IS NULL OR id < :before)
ORDER BY id DESC
LIMIT :limit
