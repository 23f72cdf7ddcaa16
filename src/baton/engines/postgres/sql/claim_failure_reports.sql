WITH picked AS MATERIALIZED (
    SELECT workflow_id FROM workflow_completions
    WHERE status = 'failed' AND NOT failure_reported
    ORDER BY announced_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE workflow_completions c SET failure_reported = true
FROM picked WHERE c.workflow_id = picked.workflow_id
RETURNING c.workflow_id
