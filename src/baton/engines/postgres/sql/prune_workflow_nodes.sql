-- The nodes of a workflow whose jobs are gone, once its finished event went out (the claim
-- confirmed: emitted_at) and, for a failed workflow, its failure report: a claim whose node
-- died before it emitted the event keeps them for the backstop, which takes the claim over and
-- summarises the workflow from them, and the failure report is written from them.
DELETE FROM workflow_nodes
WHERE job_id IN (
    SELECT n.job_id FROM workflow_nodes n
    WHERE NOT EXISTS (SELECT 1 FROM baton_jobs j WHERE j.id = n.job_id)
      AND EXISTS (SELECT 1 FROM workflow_completions c
                  WHERE c.workflow_id = n.workflow_id AND c.emitted_at IS NOT NULL
                    AND (c.status <> 'failed' OR c.failure_reported))
    LIMIT %(limit)s)
RETURNING job_id
