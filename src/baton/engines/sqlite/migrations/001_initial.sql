-- Baton schema, version 1 (SQLite): the same tables as PostgreSQL. Times are unix seconds
-- (REAL) from the database clock; JSON columns are TEXT; lists (tags, deps) are JSON arrays.

CREATE TABLE baton_jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    state         TEXT    NOT NULL DEFAULT 'available'
                  CHECK (state IN ('available', 'scheduled', 'suspended', 'executing',
                                   'retryable', 'completed', 'discarded', 'cancelled')),
    queue         TEXT    NOT NULL DEFAULT 'default' CHECK (length(queue) BETWEEN 1 AND 128),
    worker        TEXT    NOT NULL CHECK (length(worker) > 0),
    args          TEXT    NOT NULL DEFAULT '{}',
    meta          TEXT    NOT NULL DEFAULT '{}',
    tags          TEXT    NOT NULL DEFAULT '[]',
    errors        TEXT    NOT NULL DEFAULT '[]',
    attempt       INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts  INTEGER NOT NULL DEFAULT 20 CHECK (max_attempts > 0),
    priority      INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    inserted_at   REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    scheduled_at  REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    attempted_at  REAL,
    completed_at  REAL,
    cancelled_at  REAL,
    discarded_at  REAL,
    attempted_by  TEXT,
    unique_key    TEXT,
    chain_key     TEXT,
    workflow_id   TEXT
);

CREATE INDEX baton_jobs_fetch_idx ON baton_jobs (queue, priority, scheduled_at, id) WHERE state = 'available';
CREATE INDEX baton_jobs_stage_idx ON baton_jobs (scheduled_at) WHERE state IN ('scheduled', 'retryable');
CREATE INDEX baton_jobs_executing_idx ON baton_jobs (attempted_at) WHERE state = 'executing';
CREATE INDEX baton_jobs_unique_idx ON baton_jobs (unique_key, inserted_at) WHERE unique_key IS NOT NULL;
CREATE INDEX baton_jobs_chain_idx ON baton_jobs (chain_key, id) WHERE chain_key IS NOT NULL;
CREATE INDEX baton_jobs_workflow_idx ON baton_jobs (workflow_id) WHERE workflow_id IS NOT NULL;

CREATE TABLE baton_producers (
    uuid        TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    queue       TEXT NOT NULL,
    meta        TEXT NOT NULL DEFAULT '{}',
    started_at  REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    updated_at  REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);

CREATE TABLE baton_leaders (
    name        TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    instance    TEXT NOT NULL,
    elected_at  REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    expires_at  REAL NOT NULL
);

-- SQLite has no LISTEN/NOTIFY: notifications are rows every node polls.
CREATE TABLE baton_notices (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    channel      TEXT NOT NULL,
    payload      TEXT NOT NULL,
    inserted_at  REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);

CREATE TABLE baton_workflows (
    id           TEXT PRIMARY KEY,
    label        TEXT,
    inserted_at  REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);

CREATE TABLE workflow_nodes (
    workflow_id       TEXT    NOT NULL,
    name              TEXT    NOT NULL,
    job_id            INTEGER NOT NULL,
    deps              TEXT    NOT NULL DEFAULT '[]',
    label             TEXT,
    ignore_cancelled  INTEGER NOT NULL DEFAULT 0,
    ignore_discarded  INTEGER NOT NULL DEFAULT 0,
    ignore_deleted    INTEGER NOT NULL DEFAULT 0,
    pending           INTEGER NOT NULL DEFAULT 0,
    resolution        TEXT,
    reason            TEXT,
    recorded          INTEGER NOT NULL DEFAULT 0,
    result            TEXT,
    inserted_at       REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    resolved_at       REAL,
    PRIMARY KEY (workflow_id, name)
);
CREATE UNIQUE INDEX workflow_nodes_job_idx ON workflow_nodes (job_id);
CREATE INDEX workflow_nodes_unresolved_idx ON workflow_nodes (workflow_id) WHERE resolution IS NULL;

CREATE TABLE baton_workflow_deps (
    dep_job_id   INTEGER NOT NULL,
    job_id       INTEGER NOT NULL,
    workflow_id  TEXT    NOT NULL,
    PRIMARY KEY (dep_job_id, job_id)
);
CREATE INDEX baton_workflow_deps_job_idx ON baton_workflow_deps (job_id);

CREATE TABLE workflow_completions (
    workflow_id       TEXT    PRIMARY KEY,
    status            TEXT    NOT NULL,
    announced_by      TEXT    NOT NULL,
    announced_at      REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    failure_reported  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE workflow_step_stats (
    job_id       INTEGER PRIMARY KEY,
    workflow_id  TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    queued_ms    INTEGER,
    run_ms       INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    state        TEXT    NOT NULL,
    updated_at   REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE INDEX workflow_step_stats_workflow_idx ON workflow_step_stats (workflow_id);

CREATE TABLE workflow_debug_logs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id  TEXT,
    job_id       INTEGER NOT NULL,
    name         TEXT,
    level        TEXT    NOT NULL,
    message      TEXT    NOT NULL,
    inserted_at  REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE INDEX workflow_debug_logs_workflow_idx ON workflow_debug_logs (workflow_id);
CREATE INDEX workflow_debug_logs_job_idx ON workflow_debug_logs (job_id);
CREATE INDEX workflow_debug_logs_inserted_idx ON workflow_debug_logs (inserted_at);
CREATE INDEX workflow_completions_unreported_idx ON workflow_completions (workflow_id)
    WHERE status = 'failed' AND failure_reported = 0;

CREATE TABLE baton_cron (
    name        TEXT PRIMARY KEY,
    last_slot   REAL NOT NULL,
    updated_at  REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
