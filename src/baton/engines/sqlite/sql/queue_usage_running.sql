-- Jobs of a queue executing on every node, per partition of its global limit, busiest first.
SELECT baton_partition_key(j.worker, j.args, :global_fields, :global_keys) AS key,
       count(*) AS n
FROM baton_jobs j
WHERE j.state = 'executing' AND j.queue = :queue
GROUP BY 1
ORDER BY 2 DESC, 1
