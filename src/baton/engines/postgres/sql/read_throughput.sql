-- Completed jobs per minute in [since, until), from the partial index on completed_at.
SELECT date_trunc('minute', completed_at) AS minute, count(*) AS n
FROM baton_jobs
WHERE state = 'completed' AND completed_at >= %(since)s AND completed_at < %(until)s
GROUP BY 1
