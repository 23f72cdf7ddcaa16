-- Indexes for the dashboard's reads (baton.read); see the PostgreSQL migration of the same
-- number for why each exists.
-- Every state change is a non-HOT update, so each index over all jobs gains an entry per
-- transition: full (state, id), (queue, state, id) and (worker, id) indexes together cost a
-- fifth of the no-op throughput and a quarter of the bulk insert rate on our 2-core VM. So the
-- one full index is (queue, state, id) — the queue list and the per-queue counts probe it — and
-- the state filter indexes only the states a job waits or fails in, to which the hot path
-- (insert available, fetch to executing, ack to completed) never adds an entry. Available,
-- executing and completed jobs are found through the fetch index, the executing index and the
-- primary key; filters without an index of their own (worker, text, tags, a busy state) page
-- through windows of ids (baton.read.jobs).
CREATE INDEX IF NOT EXISTS baton_jobs_state_idx ON baton_jobs (state, id)
    WHERE state IN ('scheduled', 'retryable', 'suspended', 'discarded', 'cancelled');
CREATE INDEX IF NOT EXISTS baton_jobs_queue_idx ON baton_jobs (queue, state, id);
CREATE INDEX IF NOT EXISTS baton_jobs_completed_idx ON baton_jobs (completed_at) WHERE state = 'completed';
CREATE INDEX IF NOT EXISTS baton_jobs_repair_idx ON baton_jobs (id)
    WHERE json_extract(meta, '$.repair') IS NOT NULL OR json_extract(meta, '$.rescued') IS NOT NULL;
CREATE INDEX IF NOT EXISTS baton_workflows_inserted_idx ON baton_workflows (inserted_at, id);
