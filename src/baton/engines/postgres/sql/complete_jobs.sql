-- baton:prepare (hot path)
-- baton:text-arrays
-- The fence is one join condition, `(state = 'executing' AND attempt = ... AND ...) IS TRUE`,
-- which keeps the planner on the primary key twice over. The partial index on executing jobs
-- holds a dead entry for every job that ever ran (until VACUUM), and a plan that scans it slows
-- every ack down as a backlog drains (bench/backlog.py). And a filter on the state alone would be
-- estimated from statistics taken while nothing was executing (after a bulk insert, on an idle
-- table) as one row: the planner then scanned the table for that "one" row and joined it to the
-- batch by a nested loop, rescanning the batch for each of the hundreds of executing jobs it
-- found (seconds per ack batch; one of bench/hops.py's plain runs fell from 12 000 to 697
-- jobs/s). As a join condition it is estimated for no table row, so every plan starts from the
-- batch (tests/test_ack_plans.py).
-- Acks of attempts that completed with nothing else to write (no error, meta or extra
-- attempts; the common case) as typed arrays rather than JSON. Fenced like ack_jobs.
UPDATE baton_jobs j
SET state = 'completed', completed_at = now()
FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(uuids)s::text[]) AS a(id, attempt, uuid)
WHERE j.id = a.id AND (j.state = 'executing' AND j.attempt = a.attempt AND j.attempted_by[2] = a.uuid) IS TRUE
RETURNING j.id
