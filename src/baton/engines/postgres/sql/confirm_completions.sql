-- `lag`: milliseconds from the end of the workflow's last step to now (the finished event's `lag`).
-- The claimant confirms it emits the finished event of the workflows it claimed; a claim the
-- backstop took over meanwhile (announced_by changed, emitted_at set) is not returned.
UPDATE workflow_completions SET emitted_at = now()
WHERE workflow_id = ANY(%(ids)s) AND announced_by = %(node)s AND emitted_at IS NULL
RETURNING workflow_id,
       (SELECT (extract(epoch FROM now() - max(greatest(j.completed_at, j.cancelled_at, j.discarded_at))) * 1000)::float8
        FROM baton_jobs j WHERE j.workflow_id = workflow_completions.workflow_id) AS lag
