-- `lag`: milliseconds from the end of the workflow's last step to now (the finished event's `lag`).
-- The claimant confirms it emits the finished event of the workflows it claimed; a claim the
-- backstop took over meanwhile (announced_by changed, emitted_at set) is not returned.
UPDATE workflow_completions SET emitted_at = (julianday('now') - 2440587.5) * 86400.0
WHERE workflow_id IN (SELECT value FROM json_each(:ids)) AND announced_by = :node AND emitted_at IS NULL
RETURNING workflow_id,
       (SELECT ((julianday('now') - 2440587.5) * 86400.0
               - max(max(coalesce(j.completed_at, 0), coalesce(j.cancelled_at, 0), coalesce(j.discarded_at, 0)))) * 1000.0
        FROM baton_jobs j WHERE j.workflow_id = workflow_completions.workflow_id) AS lag
