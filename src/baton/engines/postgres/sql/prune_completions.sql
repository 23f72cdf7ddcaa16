-- A completion row goes only once its workflow has no nodes left, so the backstop can never
-- find the workflow unannounced and announce it a second time.
DELETE FROM workflow_completions
WHERE workflow_id IN (
    SELECT c.workflow_id FROM workflow_completions c
    WHERE NOT EXISTS (SELECT 1 FROM workflow_nodes n WHERE n.workflow_id = c.workflow_id)
    LIMIT %(limit)s)
RETURNING workflow_id
