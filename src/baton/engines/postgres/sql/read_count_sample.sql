-- Estimated jobs per (queue, state) from a sample of about `rows` rows' worth of pages, scaled
-- to the planner's row count: bounded work whatever the table size.
WITH t AS (SELECT greatest(reltuples, 0) AS total FROM pg_class WHERE oid = 'baton_jobs'::regclass),
     s AS (SELECT queue, state FROM baton_jobs TABLESAMPLE SYSTEM (
               (SELECT least(100, 100.0 * %(rows)s / greatest(total, 1)) FROM t)::real))
SELECT queue, state, round(count(*) * (SELECT total FROM t) / greatest(sum(count(*)) OVER (), 1))::bigint AS n
FROM s GROUP BY queue, state
