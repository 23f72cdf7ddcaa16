-- Retried steps are unresolved again, waiting for `pending` dependencies (reopen_steps): their
-- next ending resolves them and counts their dependents down, as for any step.
WITH r AS MATERIALIZED (
    SELECT json_extract(value, '$.id') AS r_id, json_extract(value, '$.pending') AS r_pending FROM json_each(:rows)
)
UPDATE workflow_nodes SET resolution = NULL, resolved_at = NULL, reason = NULL, pending = r_pending
FROM r WHERE job_id = r_id
