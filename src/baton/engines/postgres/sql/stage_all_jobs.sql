-- Testing drains (baton.testing): make every scheduled or retryable job due now, whatever its
-- scheduled_at, so a test runs snoozes, retries and scheduled jobs without waiting.
UPDATE baton_jobs SET state = 'available', scheduled_at = now()
WHERE state IN ('scheduled', 'retryable') AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
RETURNING queue
