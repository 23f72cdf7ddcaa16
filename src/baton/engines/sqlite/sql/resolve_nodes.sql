-- Resolve each step once: a step already resolved is left alone.
UPDATE workflow_nodes
SET resolution = (SELECT json_extract(r.value, '$.outcome') FROM json_each(:rows) AS r
                  WHERE json_extract(r.value, '$.id') = workflow_nodes.job_id),
    reason = coalesce((SELECT json_extract(r.value, '$.reason') FROM json_each(:rows) AS r
                       WHERE json_extract(r.value, '$.id') = workflow_nodes.job_id), reason),
    resolved_at = ((julianday('now') - 2440587.5) * 86400.0)
WHERE job_id IN (SELECT json_extract(value, '$.id') FROM json_each(:rows)) AND resolution IS NULL
RETURNING workflow_id, job_id, resolution
