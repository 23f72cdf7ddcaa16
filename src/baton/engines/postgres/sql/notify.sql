-- baton:prepare (hot path)
SELECT pg_notify(%(channel)s, p) FROM unnest(%(payloads)s::text[]) AS p
