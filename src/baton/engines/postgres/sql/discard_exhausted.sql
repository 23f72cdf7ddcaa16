WITH picked AS MATERIALIZED (
    SELECT id FROM baton_jobs WHERE state = 'available' AND attempt >= max_attempts
    ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
)
UPDATE baton_jobs
SET state = 'discarded', discarded_at = now(), meta = meta || jsonb_build_object('repair', 'exhausted'),
    errors = errors || jsonb_build_array(jsonb_build_object(
        'at', now(), 'attempt', attempt, 'traceback', NULL, 'reason', 'exhausted',
        'error', 'available with no attempts left (' || attempt || '/' || max_attempts || '); discarded'))
FROM picked
WHERE baton_jobs.id = picked.id AND baton_jobs.state = 'available'
RETURNING baton_jobs.id, baton_jobs.state, baton_jobs.queue, baton_jobs.worker, baton_jobs.args, baton_jobs.meta, baton_jobs.tags, baton_jobs.errors, baton_jobs.attempt, baton_jobs.max_attempts, baton_jobs.priority, baton_jobs.inserted_at, baton_jobs.scheduled_at, baton_jobs.attempted_at, baton_jobs.completed_at, baton_jobs.cancelled_at, baton_jobs.discarded_at, baton_jobs.attempted_by, baton_jobs.workflow_id, baton_jobs.chain_key,
       (SELECT n.name FROM workflow_nodes n WHERE n.job_id = baton_jobs.id) AS step
