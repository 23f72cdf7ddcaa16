DELETE FROM workflow_nodes
WHERE job_id IN (
    SELECT n.job_id FROM workflow_nodes n
    WHERE NOT EXISTS (SELECT 1 FROM baton_jobs j WHERE j.id = n.job_id)
      AND EXISTS (SELECT 1 FROM workflow_completions c WHERE c.workflow_id = n.workflow_id)
    LIMIT %(limit)s)
RETURNING job_id
