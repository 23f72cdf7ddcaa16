DELETE FROM workflow_step_stats
WHERE job_id IN (
    SELECT s.job_id FROM workflow_step_stats s
    WHERE NOT EXISTS (SELECT 1 FROM baton_jobs j WHERE j.id = s.job_id)
    LIMIT %(limit)s)
