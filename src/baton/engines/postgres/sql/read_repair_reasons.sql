-- Repairs by reason code over the newest `n` repaired or rescued jobs.
SELECT coalesce(meta ->> 'repair', CASE WHEN meta ? 'rescued' THEN 'orphaned' END, 'unknown') AS reason, count(*) AS n
FROM (SELECT meta FROM baton_jobs WHERE (meta ? 'repair' OR meta ? 'rescued') ORDER BY id DESC LIMIT %(n)s) r
GROUP BY 1
ORDER BY 2 DESC
