-- baton:prepare (hot path) every notification of a transaction in one statement, in order
SELECT pg_notify(c, p) FROM unnest(%(channels)s::text[], %(payloads)s::text[]) WITH ORDINALITY AS t(c, p, n)
ORDER BY n
