-- Retried steps are unresolved again, waiting for `pending` dependencies (reopen_steps): their
-- next ending resolves them and counts their dependents down, as for any step.
UPDATE workflow_nodes n
SET resolution = NULL, resolved_at = NULL, reason = NULL, pending = r.pending
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(id bigint, pending integer)
WHERE n.job_id = r.id
