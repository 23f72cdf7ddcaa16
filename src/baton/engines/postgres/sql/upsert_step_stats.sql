-- Step stats of acked steps, and the results of the completed ones that record theirs
-- (`results`; on SQLite that is the separate record_results statement).
WITH recorded AS (
    UPDATE workflow_nodes n SET recorded = true, result = r.result::jsonb
    FROM jsonb_to_recordset(%(results)s::jsonb) AS r(id bigint, result text)
    WHERE n.job_id = r.id
)
INSERT INTO workflow_step_stats (job_id, workflow_id, name, queued_ms, run_ms, attempts, state)
SELECT job_id, workflow_id, name, queued_ms, run_ms, attempts, state
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
    job_id bigint, workflow_id text, name text, queued_ms bigint, run_ms bigint, attempts integer, state text)
ON CONFLICT (job_id) DO UPDATE
SET queued_ms = excluded.queued_ms, run_ms = excluded.run_ms, attempts = excluded.attempts,
    state = excluded.state, updated_at = now()
