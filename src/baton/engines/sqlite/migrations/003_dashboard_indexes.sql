-- Indexes for the dashboard's reads (baton.read); see the PostgreSQL migration of the same
-- number for why each exists.
CREATE INDEX IF NOT EXISTS baton_jobs_state_idx ON baton_jobs (state, id);
CREATE INDEX IF NOT EXISTS baton_jobs_queue_idx ON baton_jobs (queue, state, id);
CREATE INDEX IF NOT EXISTS baton_jobs_worker_idx ON baton_jobs (worker, id);
CREATE INDEX IF NOT EXISTS baton_jobs_completed_idx ON baton_jobs (completed_at) WHERE state = 'completed';
CREATE INDEX IF NOT EXISTS baton_jobs_repair_idx ON baton_jobs (id)
    WHERE json_extract(meta, '$.repair') IS NOT NULL OR json_extract(meta, '$.rescued') IS NOT NULL;
CREATE INDEX IF NOT EXISTS baton_workflows_inserted_idx ON baton_workflows (inserted_at, id);
