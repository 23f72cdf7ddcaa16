-- Queue limits across nodes (docs/limits.md). The executing count of a limited queue comes
-- from baton_jobs itself (state = 'executing'), so there is no counter to drift. Starts are
-- recorded here instead, because a job's attempted_at only remembers its latest attempt and
-- pruned jobs forget theirs: one row per limited fetch and partition, `n` jobs started at
-- `started_at` (epoch seconds), written by the fetch and pruned by age in its transaction.
CREATE TABLE baton_rate_window (
    queue       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    started_at  REAL    NOT NULL,
    n           INTEGER NOT NULL CHECK (n > 0)
);
CREATE INDEX baton_rate_window_idx ON baton_rate_window (queue, started_at);
