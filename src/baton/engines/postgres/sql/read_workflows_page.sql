-- One page of workflows, newest first, keyset on (inserted_at, id), with step counts and the
-- status workflow_status reports (WorkflowStatus.outcome): running while unclaimed or while a
-- step is unresolved (a finished workflow a retry reopened), else failed when a step resolved
-- cancelled or discarded, else completed; a claimed workflow whose steps were pruned keeps the
-- claim's status.
-- ended_at: when its last step ended (a finished workflow a retry reopened finished then, not
-- at its completion claim's announced_at); for this page's rows only.
SELECT q.*, (SELECT max(greatest(j.completed_at, j.cancelled_at, j.discarded_at)) FROM workflow_nodes n JOIN baton_jobs j ON j.id = n.job_id
             WHERE n.workflow_id = q.id) AS ended_at
FROM (
    SELECT * FROM (
        SELECT w.id, w.label, w.inserted_at, c.status AS completion_status, c.announced_at,
               (SELECT count(*) FROM workflow_nodes n WHERE n.workflow_id = w.id) AS steps,
               (SELECT count(*) FROM workflow_nodes n WHERE n.workflow_id = w.id AND n.resolution IS NOT NULL) AS resolved,
               (SELECT count(*) FROM workflow_nodes n WHERE n.workflow_id = w.id
                  AND n.resolution IN ('cancelled', 'discarded', 'deleted')) AS failed,
               CASE WHEN c.status IS NULL THEN 'running'
                    WHEN EXISTS (SELECT 1 FROM workflow_nodes n WHERE n.workflow_id = w.id AND n.resolution IS NULL)
                        THEN 'running'
                    WHEN NOT EXISTS (SELECT 1 FROM workflow_nodes n WHERE n.workflow_id = w.id) THEN c.status
                    WHEN EXISTS (SELECT 1 FROM workflow_nodes n WHERE n.workflow_id = w.id
                                   AND n.resolution IN ('cancelled', 'discarded')) THEN 'failed'
                    ELSE 'completed' END AS status
        FROM baton_workflows w
        LEFT JOIN workflow_completions c ON c.workflow_id = w.id
        WHERE (%(label)s::text IS NULL OR w.label = %(label)s::text)
          AND (%(before_at)s::timestamptz IS NULL OR (w.inserted_at, w.id) < (%(before_at)s::timestamptz, %(before_id)s::text))
    ) p
    WHERE (%(status)s::text IS NULL OR p.status = %(status)s::text)
    ORDER BY p.inserted_at DESC, p.id DESC
    LIMIT %(limit)s
) q
ORDER BY q.inserted_at DESC, q.id DESC
