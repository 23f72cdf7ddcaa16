DELETE FROM workflow_debug_logs
WHERE id IN (
    SELECT l.id FROM workflow_debug_logs l
    WHERE NOT EXISTS (SELECT 1 FROM baton_jobs j WHERE j.id = l.job_id)
       OR (%(max_age)s::double precision IS NOT NULL
           AND l.inserted_at < now() - make_interval(secs => %(max_age)s::double precision))
    LIMIT %(limit)s)
