-- Every ack is fenced: it applies only while the job is still executing the same attempt for
-- baton:prepare (hot path)
-- the same producer. Rows that do not match (rescued, cancelled) are simply not returned.
WITH a AS MATERIALIZED (
    SELECT json_extract(value, '$.id') AS ack_id, json_extract(value, '$.attempt') AS ack_attempt, json_extract(value, '$.uuid') AS ack_uuid, json_extract(value, '$.state') AS ack_state,
           json_extract(value, '$.delay') AS ack_delay, json_extract(value, '$.error') AS ack_error, json_extract(value, '$.extra') AS ack_extra,
           json_extract(value, '$.meta') AS ack_meta
    FROM json_each(:acks)
)
UPDATE baton_jobs
SET state = ack_state,
    completed_at = CASE WHEN ack_state = 'completed' THEN ((julianday('now') - 2440587.5) * 86400.0) ELSE completed_at END,
    cancelled_at = CASE WHEN ack_state = 'cancelled' THEN ((julianday('now') - 2440587.5) * 86400.0) ELSE cancelled_at END,
    discarded_at = CASE WHEN ack_state = 'discarded' THEN ((julianday('now') - 2440587.5) * 86400.0) ELSE discarded_at END,
    scheduled_at = CASE WHEN ack_state IN ('retryable', 'scheduled') THEN ((julianday('now') - 2440587.5) * 86400.0) + ack_delay ELSE scheduled_at END,
    errors = CASE WHEN ack_error IS NULL THEN errors
                  ELSE json_insert(errors, '$[#]', json_set(ack_error, '$.at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), '$.attempt', attempt)) END,
    max_attempts = max_attempts + coalesce(ack_extra, 0),
    meta = coalesce(ack_meta, meta)
FROM a
WHERE id = ack_id AND state = 'executing' AND attempt = ack_attempt
  AND json_extract(attempted_by, '$[1]') = ack_uuid
RETURNING id
