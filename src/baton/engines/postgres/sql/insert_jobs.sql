-- baton:prepare (hot path)
-- Bulk insert from one JSON array. Ids come from the sequence in array order, so the caller
-- matches returned rows to its input by sorting on id. The statement also notifies the
-- producers of queues that got available jobs (delivered on commit): one round trip.
WITH input AS (
    SELECT r.*, coalesce(to_timestamp(r.at), now() + make_interval(secs => coalesce(r.delay, 0))) AS sched
    FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
        i integer, state text, queue text, worker text, args jsonb, meta jsonb, tags text[],
        priority smallint, max_attempts integer, at double precision, delay double precision,
        unique_key text, chain_key text, workflow_id text)
    ORDER BY r.i
), inserted AS (
    INSERT INTO baton_jobs (id, state, queue, worker, args, meta, tags, priority, max_attempts,
                            scheduled_at, unique_key, chain_key, workflow_id)
    SELECT nextval('baton_jobs_id_seq'),
           coalesce(state, CASE WHEN sched > now() THEN 'scheduled' ELSE 'available' END),
           queue, worker, args, meta, tags, priority, max_attempts, sched, unique_key, chain_key, workflow_id
    FROM input
    RETURNING id, state, queue, inserted_at, scheduled_at
), woken AS (
    SELECT pg_notify(%(channel)s::text, q.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'available') AS q
    WHERE %(channel)s::text IS NOT NULL
)
SELECT inserted.*, (SELECT count(*) FROM woken) AS woken FROM inserted
