-- Resolve each step once: a step already resolved is left alone, which makes a repeated
-- completion (a manual retry) unable to count its dependents down twice.
UPDATE workflow_nodes n
SET resolution = r.outcome, resolved_at = now(), reason = coalesce(r.reason, n.reason)
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(id bigint, outcome text, reason text)
WHERE n.job_id = r.id AND n.resolution IS NULL
RETURNING n.workflow_id, n.job_id, n.resolution
