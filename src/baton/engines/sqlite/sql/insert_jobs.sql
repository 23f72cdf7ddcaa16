-- Bulk insert from one JSON array, in array order (one writer: ids follow that order).
-- baton:prepare (hot path)
WITH input AS (
    SELECT key AS i, json_extract(value, '$.state') AS state, json_extract(value, '$.queue') AS queue, json_extract(value, '$.worker') AS worker,
           json_extract(value, '$.args') AS args, json_extract(value, '$.meta') AS meta,
           json_extract(value, '$.tags') AS tags, json_extract(value, '$.priority') AS priority, json_extract(value, '$.max_attempts') AS max_attempts,
           coalesce(json_extract(value, '$.at'), ((julianday('now') - 2440587.5) * 86400.0) + coalesce(json_extract(value, '$.delay'), 0)) AS sched,
           json_extract(value, '$.unique_key') AS unique_key, json_extract(value, '$.chain_key') AS chain_key, json_extract(value, '$.workflow_id') AS workflow_id
    FROM json_each(:rows)
)
INSERT INTO baton_jobs (state, queue, worker, args, meta, tags, priority, max_attempts,
                        scheduled_at, unique_key, chain_key, workflow_id)
SELECT coalesce(state, CASE WHEN sched > ((julianday('now') - 2440587.5) * 86400.0) THEN 'scheduled' ELSE 'available' END),
       queue, worker, args, meta, tags, priority, max_attempts, sched, unique_key, chain_key, workflow_id
FROM input ORDER BY i
RETURNING id, state, queue, inserted_at, scheduled_at
