-- Retried steps are unresolved again, waiting for `pending` dependencies (reopen_steps): their
-- next ending resolves them and counts their dependents down, as for any step. The result an
-- earlier attempt recorded is dropped (a graft step's excepted: it describes what it grafted):
-- a retried step runs its body again, as any retried job, and records what this run returns.
WITH r AS MATERIALIZED (
    SELECT json_extract(value, '$.id') AS r_id, json_extract(value, '$.pending') AS r_pending FROM json_each(:rows)
)
UPDATE workflow_nodes SET resolution = NULL, resolved_at = NULL, reason = NULL, pending = r_pending,
    recorded = recorded AND graft, result = CASE WHEN graft THEN result END
FROM r WHERE job_id = r_id
