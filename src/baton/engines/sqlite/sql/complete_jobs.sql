-- baton:prepare (hot path)
-- Acks of attempts that completed with nothing else to write (no error, meta or extra
-- attempts; the common case). Fenced like ack_jobs.
WITH a AS MATERIALIZED (
    SELECT i.value AS ack_id, json_extract(:attempts, '$[' || i.key || ']') AS ack_attempt,
           json_extract(:uuids, '$[' || i.key || ']') AS ack_uuid
    FROM json_each(:ids) AS i
)
UPDATE baton_jobs
SET state = 'completed', completed_at = ((julianday('now') - 2440587.5) * 86400.0)
FROM a
WHERE id = ack_id AND state = 'executing' AND attempt = ack_attempt
  AND json_extract(attempted_by, '$[1]') = ack_uuid
RETURNING id
