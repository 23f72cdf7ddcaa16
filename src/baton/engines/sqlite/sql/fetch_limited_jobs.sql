-- The fetch of a queue with a global or rate limit (docs/limits.md), in the fetch's
-- BEGIN IMMEDIATE transaction (after prune_rate_window, before record_rate_window).
-- Executing jobs are counted from baton_jobs (per partition), starts from baton_rate_window;
-- each partition gets at most what its limits leave, the whole fetch at most :limit.
-- A partition key is a JSON array: [worker?, value of each key...] (or the whole args), the
-- text of baton_partition_key, a Python function the engine registers on its connection
-- (engine.partition_key): values normalised as PostgreSQL's jsonb prints them, the same key
-- as PostgreSQL's function of that name.
WITH running AS (
    SELECT baton_partition_key(j.worker, j.args, :global_fields, :global_keys) AS key,
           count(*) AS n
    FROM baton_jobs j
    WHERE :global_allowed IS NOT NULL AND j.state = 'executing' AND j.queue = :queue
    GROUP BY 1
),
recent AS (
    SELECT key, sum(n) AS n
    FROM baton_rate_window
    WHERE :rate_allowed IS NOT NULL AND queue = :queue AND started_at > :now - :rate_period
    GROUP BY key
),
candidates AS MATERIALIZED (
    SELECT j.id, j.priority, j.scheduled_at,
           baton_partition_key(j.worker, j.args, :global_fields, :global_keys) AS gkey,
           baton_partition_key(j.worker, j.args, :rate_fields, :rate_keys) AS rkey
    FROM baton_jobs j
    WHERE j.state = 'available' AND j.queue = :queue
    ORDER BY j.priority, j.scheduled_at, j.id
    LIMIT :scan
),
under_global AS (
    SELECT c.id, c.priority, c.scheduled_at, c.rkey
    FROM (SELECT *, row_number() OVER (PARTITION BY gkey ORDER BY priority, scheduled_at, id) AS rank
          FROM candidates) c
    LEFT JOIN running r ON r.key = c.gkey
    WHERE :global_allowed IS NULL OR c.rank <= :global_allowed - coalesce(r.n, 0)
),
under_rate AS (
    SELECT c.id, c.priority, c.scheduled_at
    FROM (SELECT *, row_number() OVER (PARTITION BY rkey ORDER BY priority, scheduled_at, id) AS rank
          FROM under_global) c
    LEFT JOIN recent w ON w.key = c.rkey
    WHERE :rate_allowed IS NULL OR c.rank <= :rate_allowed - coalesce(w.n, 0)
)
UPDATE baton_jobs
SET state = 'executing', attempt = attempt + 1, attempted_at = :now, attempted_by = json_array(:node, :uuid)
WHERE id IN (SELECT id FROM under_rate ORDER BY priority, scheduled_at, id LIMIT :limit)
RETURNING id, queue, worker, args, meta, tags, errors, attempt, max_attempts, priority, inserted_at, scheduled_at,
          attempted_at, workflow_id, chain_key
