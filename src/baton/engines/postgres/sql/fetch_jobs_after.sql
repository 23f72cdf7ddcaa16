-- baton:prepare (hot path)
-- fetch_jobs, only among jobs after a position in fetch order (see store.transitions.fetch_next).
-- Returns only what the fetch does not already know (state, attempted_by and the end
-- timestamps are set by Job.fetched); JSON comes as text, which Job.fetched parses faster
-- than a JSON loader per value (and not at all for the usual empty meta and errors).
WITH picked AS MATERIALIZED (
    SELECT id FROM baton_jobs
    WHERE state = 'available' AND queue = %(queue)s::text
      AND (priority, scheduled_at, id) > (%(after_priority)s::smallint, %(after_scheduled_at)s::timestamptz, %(after_id)s::bigint)
    ORDER BY priority, scheduled_at, id
    LIMIT %(limit)s::integer
    FOR UPDATE SKIP LOCKED
), fetched AS (
    UPDATE baton_jobs j
    SET state = 'executing', attempt = j.attempt + 1, attempted_at = now(),
        attempted_by = ARRAY[%(node)s::text, %(uuid)s::text]
    FROM picked
    WHERE j.id = picked.id
    RETURNING j.id, j.queue, j.worker, j.args::text AS args, j.meta::text AS meta, j.tags, j.errors::text AS errors, j.attempt, j.max_attempts, j.priority, j.inserted_at, j.scheduled_at, j.attempted_at, j.workflow_id, j.chain_key
)
SELECT f.*, c.ctx
FROM fetched f
LEFT JOIN (
    -- Gated by a one-time filter: a fetch that took no workflow step never calls the function
    -- (on an idle server the call cost a single job's fetch 0.06 ms after a notification).
    SELECT * FROM baton_step_contexts(ARRAY(SELECT s.id FROM fetched s WHERE s.workflow_id IS NOT NULL), %(channel)s::text)
    WHERE EXISTS (SELECT FROM fetched s WHERE s.workflow_id IS NOT NULL)
) c ON c.job_id = f.id
