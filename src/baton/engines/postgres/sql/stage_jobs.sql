-- baton:prepare (hot path)
WITH due AS MATERIALIZED (
    SELECT id FROM baton_jobs
    WHERE state IN ('scheduled', 'retryable') AND scheduled_at <= now()
    ORDER BY scheduled_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE baton_jobs j SET state = 'available' FROM due WHERE j.id = due.id
RETURNING j.queue
