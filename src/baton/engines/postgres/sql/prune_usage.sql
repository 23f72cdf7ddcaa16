DELETE FROM baton_usage
WHERE id IN (
    SELECT u.id FROM baton_usage u
    WHERE NOT EXISTS (SELECT 1 FROM baton_jobs j WHERE j.id = u.job_id)
    ORDER BY u.id
    LIMIT %(limit)s)
