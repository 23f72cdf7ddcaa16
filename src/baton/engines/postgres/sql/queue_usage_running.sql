-- Jobs of a queue executing on every node, per partition of its global limit, busiest first.
SELECT baton_partition_key(worker, args, %(global_fields)s::text[], %(global_keys)s::text[]) AS key, count(*) AS n
FROM baton_jobs
WHERE state = 'executing' AND queue = %(queue)s
GROUP BY 1
ORDER BY 2 DESC, 1
