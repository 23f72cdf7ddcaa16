-- baton:prepare (hot path of limited queues)
-- The limited fetch with partitions: the function baton_fetch_limited (migration 004) takes
-- the queue's turn and fetches in this one statement (docs/limits.md).
SELECT * FROM baton_fetch_limited(
    %(queue)s, %(node)s, %(uuid)s, %(limit)s, %(scan)s,
    %(global_allowed)s, %(global_fields)s::text[], %(global_keys)s::text[],
    %(rate_allowed)s, %(rate_period)s::float8, %(rate_fields)s::text[], %(rate_keys)s::text[])
