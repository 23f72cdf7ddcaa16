-- Workflows whose every step's job is terminal or gone, with no completion row yet.
SELECT w.id FROM baton_workflows w
WHERE NOT EXISTS (SELECT 1 FROM workflow_completions c WHERE c.workflow_id = w.id)
  AND EXISTS (SELECT 1 FROM workflow_nodes n WHERE n.workflow_id = w.id)
  AND NOT EXISTS (
      SELECT 1 FROM workflow_nodes n JOIN baton_jobs j ON j.id = n.job_id
      WHERE n.workflow_id = w.id AND j.state NOT IN ('completed', 'discarded', 'cancelled'))
ORDER BY w.inserted_at
LIMIT %(limit)s
