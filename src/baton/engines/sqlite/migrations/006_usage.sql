-- Usage and cost of attempts (`job.record_usage`), written with the attempt's ack: one row
-- per recorded call. cost is NULL when the model was unpriced when the call was recorded; it
-- is kept as exact decimal TEXT (a REAL would round), and summed by the engine's
-- baton_decimal_sum aggregate. WorkflowHealth prunes rows whose job is gone.
CREATE TABLE baton_usage (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id         INTEGER NOT NULL,
    workflow_id    TEXT,
    step           TEXT,
    attempt        INTEGER NOT NULL,
    model          TEXT    NOT NULL,
    input_tokens   INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    extra          TEXT,
    cost           TEXT,
    recorded_at    REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE INDEX baton_usage_workflow_idx ON baton_usage (workflow_id) WHERE workflow_id IS NOT NULL;
CREATE INDEX baton_usage_recorded_idx ON baton_usage (recorded_at);
