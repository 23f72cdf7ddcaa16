-- Queue limits across nodes (docs/limits.md). The executing count of a limited queue comes
-- from baton_jobs itself (state = 'executing'), so there is no counter to drift. Starts are
-- recorded here instead, because a job's attempted_at only remembers its latest attempt and
-- pruned jobs forget theirs: one row per limited fetch and partition, `n` jobs started at
-- `started_at`, written by the fetch and pruned by age in the same statement.
CREATE TABLE baton_rate_window (
    queue       text        NOT NULL,
    key         text        NOT NULL,
    started_at  timestamptz NOT NULL,
    n           integer     NOT NULL CHECK (n > 0)
);
CREATE INDEX baton_rate_window_idx ON baton_rate_window (queue, started_at);

-- The partition a job falls in, as JSON text: [worker?, value of each key...] (the whole args
-- when `args` is partitioned without keys); '[]' for an unpartitioned limit. One expression
-- without a subquery (hence at most 4 keys), so the planner inlines it into the fetch.
CREATE FUNCTION baton_partition_key(worker text, args jsonb, fields text[], keys text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN cardinality(fields) = 0 THEN '[]' ELSE
        (CASE WHEN 'worker' = ANY (fields) THEN jsonb_build_array(worker) ELSE '[]'::jsonb END
         || CASE WHEN NOT 'args' = ANY (fields) THEN '[]'::jsonb
                 WHEN cardinality(keys) = 0 THEN jsonb_build_array(args)
                 WHEN cardinality(keys) = 1 THEN jsonb_build_array(args -> keys[1])
                 WHEN cardinality(keys) = 2 THEN jsonb_build_array(args -> keys[1], args -> keys[2])
                 WHEN cardinality(keys) = 3 THEN jsonb_build_array(args -> keys[1], args -> keys[2], args -> keys[3])
                 ELSE jsonb_build_array(args -> keys[1], args -> keys[2], args -> keys[3], args -> keys[4]) END)::text
    END
$$;
