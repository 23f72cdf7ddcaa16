SELECT w.id FROM baton_workflows w
WHERE w.id = ANY (%(ids)s::text[])
  AND NOT EXISTS (SELECT 1 FROM workflow_nodes n WHERE n.workflow_id = w.id AND n.resolution IS NULL)
  AND NOT EXISTS (SELECT 1 FROM workflow_completions c WHERE c.workflow_id = w.id)
