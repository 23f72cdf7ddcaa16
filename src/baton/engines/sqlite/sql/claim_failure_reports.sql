UPDATE workflow_completions SET failure_reported = 1
WHERE workflow_id IN (
    SELECT workflow_id FROM workflow_completions
    WHERE status = 'failed' AND failure_reported = 0
    ORDER BY announced_at LIMIT :limit)
RETURNING workflow_id
