SELECT w.id, w.label, w.inserted_at, c.status AS completion_status, c.announced_at,
       (SELECT count(*) FROM workflow_nodes n WHERE n.workflow_id = w.id) AS steps,
       (SELECT count(*) FROM workflow_nodes n WHERE n.workflow_id = w.id AND n.resolution IS NOT NULL) AS resolved,
       (SELECT count(*) FROM workflow_nodes n WHERE n.workflow_id = w.id
          AND n.resolution IN ('cancelled', 'discarded', 'deleted')) AS failed
FROM baton_workflows w
LEFT JOIN workflow_completions c ON c.workflow_id = w.id
WHERE (:label IS NULL OR w.label = :label)
  AND (:status IS NULL OR (:status = 'running' AND c.status IS NULL) OR c.status = :status)
  AND (:before_at IS NULL OR (w.inserted_at, w.id) < (CAST(:before_at AS REAL), :before_id))
ORDER BY w.inserted_at DESC, w.id DESC
LIMIT :limit
