-- Indexes for the dashboard's reads (baton.read): every filter of the jobs page walks an
-- index newest first and stops at the page size, per-queue counts probe (queue, state) ranges,
-- the throughput chart reads a time range of completions, and the health page finds repaired
-- jobs without scanning the table. Each index costs a little on every state change (a state
-- change is never a HOT update), which is why there is one per filter and no more.
CREATE INDEX IF NOT EXISTS baton_jobs_state_idx ON baton_jobs (state, id);
CREATE INDEX IF NOT EXISTS baton_jobs_queue_idx ON baton_jobs (queue, state, id);
CREATE INDEX IF NOT EXISTS baton_jobs_worker_idx ON baton_jobs (worker, id);
CREATE INDEX IF NOT EXISTS baton_jobs_completed_idx ON baton_jobs (completed_at) WHERE state = 'completed';
CREATE INDEX IF NOT EXISTS baton_jobs_repair_idx ON baton_jobs (id) WHERE meta ? 'repair' OR meta ? 'rescued';
CREATE INDEX IF NOT EXISTS baton_workflows_inserted_idx ON baton_workflows (inserted_at, id);
