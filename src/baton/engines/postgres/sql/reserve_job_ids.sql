-- baton:prepare (hot path)
-- Job ids for a COPY (one per job: other sessions may interleave), with the database clock
-- the new jobs are stamped with; also wakes the batch's queues (delivered on commit). One row:
-- the first id, and the ids as an array literal only when they are not one contiguous run
-- (nextval increases, so n ids spanning n values are that run): the usual case needs neither
-- the literal built nor read back.
SELECT CASE WHEN a[%(n)s::integer] - a[1] = %(n)s::integer - 1 THEN NULL ELSE a::text END AS ids, a[1] AS first,
       now() AS now,
       (SELECT count(pg_notify(%(channel)s::text, q)) FROM unnest(%(queues)s::text[]) AS q
        WHERE %(channel)s::text IS NOT NULL) AS woken
FROM (SELECT array_agg(nextval('baton_jobs_id_seq')) AS a FROM generate_series(1, %(n)s::integer)) AS r
