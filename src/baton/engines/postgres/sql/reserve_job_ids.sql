-- baton:prepare (hot path)
-- Job ids for a COPY (one per job: other sessions may interleave), with the database clock
-- the new jobs are stamped with; also wakes the batch's queues (delivered on commit). One row,
-- the ids as an array literal: cheap to read back.
SELECT array_agg(nextval('baton_jobs_id_seq'))::text AS ids, now() AS now,
       (SELECT count(pg_notify(%(channel)s::text, q)) FROM unnest(%(queues)s::text[]) AS q
        WHERE %(channel)s::text IS NOT NULL) AS woken
FROM generate_series(1, %(n)s::integer)
