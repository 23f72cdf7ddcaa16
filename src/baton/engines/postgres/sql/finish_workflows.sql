-- baton:prepare (hot path)
-- Lock, check, count and claim finished workflows, and notify their finished events (migration 007).
SELECT * FROM baton_finish_workflows(%(ids)s::text[], %(node)s::text, %(origin)s::text, %(channel)s::text)
