SELECT w.id, w.label, w.inserted_at, c.status AS completion_status, c.announced_at,
       count(n.name) AS steps,
       sum(CASE WHEN n.resolution IS NOT NULL THEN 1 ELSE 0 END) AS resolved
FROM baton_workflows w
LEFT JOIN workflow_completions c ON c.workflow_id = w.id
LEFT JOIN workflow_nodes n ON n.workflow_id = w.id
WHERE (:label IS NULL OR w.label = :label)
GROUP BY w.id, w.label, w.inserted_at, c.status, c.announced_at
ORDER BY w.inserted_at DESC
LIMIT :limit
