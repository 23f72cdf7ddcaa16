-- The starts of this fetch, one row per rate partition (see fetch_limited_jobs for the key).
INSERT INTO baton_rate_window (queue, key, started_at, n)
SELECT :queue,
       baton_partition_key(j.worker, j.args, :rate_fields, :rate_keys),
       :now, count(*)
FROM baton_jobs j
WHERE :rate_allowed IS NOT NULL AND j.id IN (SELECT value FROM json_each(:ids))
GROUP BY 2
