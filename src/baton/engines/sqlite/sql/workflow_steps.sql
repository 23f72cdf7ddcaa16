SELECT n.name, n.job_id, n.deps, n.resolution, n.reason, n.pending, n.recorded, n.result,
       n.ignore_cancelled, n.ignore_discarded, n.ignore_deleted, n.graft, n.grafted, n.parent,
       j.state, j.queue, j.worker, j.attempt, j.max_attempts, json_extract(j.errors, '$[#-1]') AS last_error,
       s.queued_ms, s.run_ms, nullif(max(coalesce(j.completed_at, 0), coalesce(j.cancelled_at, 0), coalesce(j.discarded_at, 0)), 0) AS ended_at
FROM workflow_nodes n
LEFT JOIN baton_jobs j ON j.id = n.job_id
LEFT JOIN workflow_step_stats s ON s.job_id = n.job_id
WHERE n.workflow_id = :id
ORDER BY n.job_id
