-- The starts of this fetch, one row per rate partition (see fetch_limited_jobs for the key).
INSERT INTO baton_rate_window (queue, key, started_at, n)
SELECT :queue,
       (SELECT json_group_array(v) FROM (
            SELECT 0 AS o, j.worker AS v WHERE :rate_by_worker
            UNION ALL SELECT 1, j.args WHERE :rate_whole_args
            UNION ALL SELECT 1 + k.key, a.value
            FROM json_each(:rate_keys) k LEFT JOIN json_each(j.args) a ON a.key = k.value
            ORDER BY o)),
       :now, count(*)
FROM baton_jobs j
WHERE :rate_allowed IS NOT NULL AND j.id IN (SELECT value FROM json_each(:ids))
GROUP BY 2
