-- The claimant confirms it emits the finished event of the workflows it claimed; a claim the
-- backstop took over meanwhile (announced_by changed, emitted_at set) is not returned.
UPDATE workflow_completions SET emitted_at = (julianday('now') - 2440587.5) * 86400.0
WHERE workflow_id IN (SELECT value FROM json_each(:ids)) AND announced_by = :node AND emitted_at IS NULL
RETURNING workflow_id
