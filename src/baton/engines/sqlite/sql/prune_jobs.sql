DELETE FROM baton_jobs
WHERE id IN (
    SELECT j.id FROM baton_jobs j
    JOIN (SELECT json_extract(value, '$.state') AS state, json_extract(value, '$.age') AS age
          FROM json_each(:ages)) AS cfg ON cfg.state = j.state
    WHERE coalesce(j.completed_at, j.cancelled_at, j.discarded_at, j.inserted_at) < ((julianday('now') - 2440587.5) * 86400.0) - cfg.age
      AND (NOT :keep OR j.workflow_id IS NULL
           OR EXISTS (SELECT 1 FROM workflow_completions c WHERE c.workflow_id = j.workflow_id))
    ORDER BY j.id
    LIMIT :limit)
RETURNING state
