SELECT w.id, w.label, EXISTS (SELECT 1 FROM workflow_completions c WHERE c.workflow_id = w.id) AS finished
FROM baton_workflows w WHERE w.id = %(id)s
FOR UPDATE OF w
