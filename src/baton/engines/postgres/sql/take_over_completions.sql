-- `lag`: milliseconds from the end of the workflow's last step to now (the finished event's `lag`).
-- Backstop: claims whose node never confirmed the finished event (killed between its commit
-- and the confirmation) for longer than `stale` seconds are taken over by this node.
WITH picked AS MATERIALIZED (
    SELECT workflow_id FROM workflow_completions
    WHERE emitted_at IS NULL AND announced_at < now() - make_interval(secs => %(stale)s)
    ORDER BY announced_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE workflow_completions c SET announced_by = %(node)s, emitted_at = now()
FROM picked WHERE c.workflow_id = picked.workflow_id AND c.emitted_at IS NULL
RETURNING c.workflow_id,
       (SELECT (extract(epoch FROM now() - max(greatest(j.completed_at, j.cancelled_at, j.discarded_at))) * 1000)::float8
        FROM baton_jobs j WHERE j.workflow_id = c.workflow_id) AS lag
