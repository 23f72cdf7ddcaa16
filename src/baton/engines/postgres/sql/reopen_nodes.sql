-- Retried steps are unresolved again, waiting for `pending` dependencies (reopen_steps): their
-- next ending resolves them and counts their dependents down, as for any step. The result an
-- earlier attempt recorded is dropped (a graft step's excepted: it describes what it grafted):
-- a retried step runs its body again, as any retried job, and records what this run returns.
UPDATE workflow_nodes n
SET resolution = NULL, resolved_at = NULL, reason = NULL, pending = r.pending,
    recorded = n.recorded AND n.graft, result = CASE WHEN n.graft THEN n.result END
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(id bigint, pending integer)
WHERE n.job_id = r.id
