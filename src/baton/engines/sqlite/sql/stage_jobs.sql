-- baton:prepare (hot path)
UPDATE baton_jobs SET state = 'available'
WHERE id IN (
    SELECT id FROM baton_jobs
    WHERE state IN ('scheduled', 'retryable') AND scheduled_at <= ((julianday('now') - 2440587.5) * 86400.0)
    ORDER BY scheduled_at
    LIMIT :limit
)
RETURNING queue
