UPDATE workflow_completions SET failure_reported = true
WHERE workflow_id IN (
    SELECT workflow_id FROM workflow_completions
    WHERE status = 'failed' AND NOT failure_reported
    ORDER BY announced_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
RETURNING workflow_id
