-- Per unique key, the oldest job other than `ids` that is waiting or running (what a retried
-- job with that key would run beside). The caller holds the keys' locks (lock_keys).
SELECT DISTINCT ON (unique_key) unique_key, id, state FROM baton_jobs
WHERE unique_key = ANY (%(keys)s::text[]) AND NOT (id = ANY (%(ids)s::bigint[]))
  AND state IN ('available', 'scheduled', 'suspended', 'executing', 'retryable')
ORDER BY unique_key, id
