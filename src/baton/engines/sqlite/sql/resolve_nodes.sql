-- Resolve each step once: a step already resolved is left alone.
WITH r AS MATERIALIZED (
    SELECT json_extract(value, '$.id') AS r_id, json_extract(value, '$.outcome') AS r_outcome,
           json_extract(value, '$.reason') AS r_reason
    FROM json_each(:rows)
)
UPDATE workflow_nodes SET resolution = r_outcome, reason = coalesce(r_reason, reason), resolved_at = ((julianday('now') - 2440587.5) * 86400.0)
FROM r WHERE job_id = r_id AND resolution IS NULL
RETURNING 'node' AS kind, workflow_id, job_id, resolution
