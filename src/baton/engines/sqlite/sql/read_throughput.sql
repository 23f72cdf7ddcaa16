-- Completed jobs per minute in [since, until) (unix seconds), from the partial index on completed_at.
SELECT CAST(completed_at / 60 AS INTEGER) * 60 AS minute, count(*) AS n
FROM baton_jobs
WHERE state = 'completed' AND completed_at >= :since AND completed_at < :until
GROUP BY 1
