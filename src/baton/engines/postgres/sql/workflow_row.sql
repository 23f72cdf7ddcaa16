SELECT w.id, w.label, w.context, w.inserted_at, c.status AS completion_status, c.announced_by, c.announced_at
FROM baton_workflows w
LEFT JOIN workflow_completions c ON c.workflow_id = w.id
WHERE w.id = %(id)s
