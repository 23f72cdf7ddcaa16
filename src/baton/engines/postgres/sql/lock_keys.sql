-- Transaction-scoped advisory locks, taken in the order given (callers sort the keys).
-- baton:prepare (hot path)
SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(%(keys)s::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n
