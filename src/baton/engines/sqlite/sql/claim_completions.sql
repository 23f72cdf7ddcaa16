-- The atomic claim: only the inserter of a workflow's completion row announces it.
INSERT INTO workflow_completions (workflow_id, status, announced_by)
SELECT json_extract(value, '$.id'), json_extract(value, '$.status'), :node FROM json_each(:rows) WHERE true
ON CONFLICT (workflow_id) DO NOTHING
RETURNING workflow_id, status
