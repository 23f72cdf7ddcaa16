-- A completion row goes only once its finished event (emitted_at) and, for a failed workflow,
-- its failure report went out, and its workflow has no nodes left: so the backstop can never
-- find the workflow unannounced and announce it a second time, nor lose a claim it has to take
-- over or a failure it has to report.
DELETE FROM workflow_completions
WHERE workflow_id IN (
    SELECT c.workflow_id FROM workflow_completions c
    WHERE c.emitted_at IS NOT NULL AND (c.status <> 'failed' OR c.failure_reported)
      AND NOT EXISTS (SELECT 1 FROM workflow_nodes n WHERE n.workflow_id = c.workflow_id)
    LIMIT %(limit)s)
RETURNING workflow_id
