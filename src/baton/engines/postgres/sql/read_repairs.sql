-- Jobs the self-healing plugins repaired or rescued, newest first (partial index on the repair keys).
SELECT id, state, queue, worker, workflow_id, meta ->> 'repair' AS repair, CASE WHEN jsonb_typeof(meta -> 'rescued') = 'number' AND meta ->> 'rescued' ~ '^[0-9]{1,9}$' THEN (meta ->> 'rescued')::integer ELSE 0 END AS rescued,
       errors -> -1 ->> 'error' AS last_error, errors -> -1 ->> 'reason' AS last_reason, errors -> -1 ->> 'at' AS last_at,
       (SELECT n.name FROM workflow_nodes n WHERE n.job_id = baton_jobs.id) AS step
FROM baton_jobs
WHERE (meta ? 'repair' OR meta ? 'rescued')
  AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s
