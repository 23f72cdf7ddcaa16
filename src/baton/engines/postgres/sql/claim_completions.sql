-- The atomic claim: only the inserter of a workflow's completion row announces it.
INSERT INTO workflow_completions (workflow_id, status, announced_by)
SELECT r.id, r.status, %(node)s FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(id text, status text)
ON CONFLICT (workflow_id) DO NOTHING
RETURNING workflow_id, status
