-- Jobs of a queue executing on every node, per partition of its global limit, busiest first.
SELECT (SELECT json_group_array(v) FROM (
            SELECT 0 AS o, j.worker AS v WHERE :global_by_worker
            UNION ALL SELECT 1, j.args WHERE :global_whole_args
            UNION ALL SELECT 1 + k.key, a.value
            FROM json_each(:global_keys) k LEFT JOIN json_each(j.args) a ON a.key = k.value
            ORDER BY o)) AS key,
       count(*) AS n
FROM baton_jobs j
WHERE j.state = 'executing' AND j.queue = :queue
GROUP BY 1
ORDER BY 2 DESC, 1
