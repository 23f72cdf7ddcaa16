DELETE FROM workflow_debug_logs
WHERE id IN (
    SELECT l.id FROM workflow_debug_logs l
    WHERE NOT EXISTS (SELECT 1 FROM baton_jobs j WHERE j.id = l.job_id)
       OR (:max_age IS NOT NULL AND l.inserted_at < ((julianday('now') - 2440587.5) * 86400.0) - :max_age)
    LIMIT :limit)
