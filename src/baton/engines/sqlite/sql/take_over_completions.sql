-- `lag`: milliseconds from the end of the workflow's last step to now (the finished event's `lag`).
-- Backstop: claims whose node never confirmed the finished event (killed between its commit
-- and the confirmation) for longer than `stale` seconds are taken over by this node.
UPDATE workflow_completions
SET announced_by = :node, emitted_at = (julianday('now') - 2440587.5) * 86400.0
WHERE workflow_id IN (
    SELECT workflow_id FROM workflow_completions
    WHERE emitted_at IS NULL AND announced_at < (julianday('now') - 2440587.5) * 86400.0 - :stale
    ORDER BY announced_at LIMIT :limit)
  AND emitted_at IS NULL
RETURNING workflow_id,
       (SELECT ((julianday('now') - 2440587.5) * 86400.0
               - max(max(coalesce(j.completed_at, 0), coalesce(j.cancelled_at, 0), coalesce(j.discarded_at, 0)))) * 1000.0
        FROM baton_jobs j WHERE j.workflow_id = workflow_completions.workflow_id) AS lag
