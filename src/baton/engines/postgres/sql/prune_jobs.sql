WITH cfg AS (
    SELECT * FROM jsonb_to_recordset(%(ages)s::jsonb) AS c(state text, age double precision)
), picked AS MATERIALIZED (
    SELECT j.id FROM baton_jobs j JOIN cfg ON cfg.state = j.state
    WHERE coalesce(j.completed_at, j.cancelled_at, j.discarded_at, j.inserted_at) < now() - make_interval(secs => cfg.age)
      AND (NOT %(keep)s::boolean OR j.workflow_id IS NULL
           OR EXISTS (SELECT 1 FROM workflow_completions c WHERE c.workflow_id = j.workflow_id))
    ORDER BY j.id
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED
)
DELETE FROM baton_jobs USING picked WHERE baton_jobs.id = picked.id
RETURNING baton_jobs.state
