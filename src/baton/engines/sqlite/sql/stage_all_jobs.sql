-- Testing drains (baton.testing): make every scheduled or retryable job due now, whatever its
-- scheduled_at, so a test runs snoozes, retries and scheduled jobs without waiting.
UPDATE baton_jobs SET state = 'available', scheduled_at = ((julianday('now') - 2440587.5) * 86400.0)
WHERE state IN ('scheduled', 'retryable') AND (:queue IS NULL OR queue = :queue)
RETURNING queue
