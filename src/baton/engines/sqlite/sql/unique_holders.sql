-- Per unique key, the oldest job other than `ids` that is waiting or running (what a retried
-- job with that key would run beside).
SELECT unique_key, min(id) AS id, state FROM baton_jobs
WHERE unique_key IN (SELECT value FROM json_each(:keys)) AND id NOT IN (SELECT value FROM json_each(:ids))
  AND state IN ('available', 'scheduled', 'suspended', 'executing', 'retryable')
GROUP BY unique_key
