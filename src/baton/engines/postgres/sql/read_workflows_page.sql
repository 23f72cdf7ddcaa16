-- One page of workflows, newest first, keyset on (inserted_at, id), with step counts.
SELECT w.id, w.label, w.inserted_at, c.status AS completion_status, c.announced_at,
       (SELECT count(*) FROM workflow_nodes n WHERE n.workflow_id = w.id) AS steps,
       (SELECT count(*) FROM workflow_nodes n WHERE n.workflow_id = w.id AND n.resolution IS NOT NULL) AS resolved,
       (SELECT count(*) FROM workflow_nodes n WHERE n.workflow_id = w.id
          AND n.resolution IN ('cancelled', 'discarded', 'deleted')) AS failed
FROM baton_workflows w
LEFT JOIN workflow_completions c ON c.workflow_id = w.id
WHERE (%(label)s::text IS NULL OR w.label = %(label)s::text)
  AND (%(status)s::text IS NULL OR (%(status)s::text = 'running' AND c.status IS NULL) OR c.status = %(status)s::text)
  AND (%(before_at)s::timestamptz IS NULL OR (w.inserted_at, w.id) < (%(before_at)s::timestamptz, %(before_id)s::text))
ORDER BY w.inserted_at DESC, w.id DESC
LIMIT %(limit)s
