-- The workflow steps among `ids` a retry moves back (store.retry.reopen_steps): each with
-- its resolution and ignore flags, one row per dependency (its name, job, resolution and state:
-- its job's, or for a job row gone its resolution, else 'deleted'), or one row with a NULL
-- dependency for a step without any.
SELECT n.job_id, n.name, n.resolution, n.ignore_cancelled, n.ignore_discarded, n.ignore_deleted,
       e.dep_job_id, coalesce(d.name, 'job ' || e.dep_job_id) AS dep_name, d.resolution AS dep_resolution,
       coalesce(dj.state, CASE WHEN d.resolution IN ('completed', 'cancelled', 'discarded') THEN d.resolution END,
                'deleted') AS dep_state
FROM workflow_nodes n
LEFT JOIN baton_workflow_deps e ON e.job_id = n.job_id
LEFT JOIN workflow_nodes d ON d.job_id = e.dep_job_id
LEFT JOIN baton_jobs dj ON dj.id = e.dep_job_id
WHERE n.job_id IN (SELECT value FROM json_each(:ids))
ORDER BY n.job_id, e.dep_job_id
