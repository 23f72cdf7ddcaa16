-- baton:prepare (hot path)
-- baton:text-arrays
-- `(state = 'executing') IS TRUE` keeps the planner on the primary key: the partial index on
-- executing jobs holds a dead entry for every job that ever ran (until VACUUM), and a plan that
-- scans it slows every ack down as a backlog drains (bench/backlog.py).
-- Acks of attempts that completed with nothing else to write (no error, meta or extra
-- attempts; the common case) as typed arrays rather than JSON. Fenced like ack_jobs.
UPDATE baton_jobs j
SET state = 'completed', completed_at = now()
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(uuids)s::text[]) AS a(id, attempt, uuid)
WHERE j.id = a.id AND (j.state = 'executing') IS TRUE AND j.attempt = a.attempt AND j.attempted_by[2] = a.uuid
RETURNING j.id
