-- The claimant confirms it emits the finished event of the workflows it claimed; a claim the
-- backstop took over meanwhile (announced_by changed, emitted_at set) is not returned.
UPDATE workflow_completions SET emitted_at = now()
WHERE workflow_id = ANY(%(ids)s) AND announced_by = %(node)s AND emitted_at IS NULL
RETURNING workflow_id
