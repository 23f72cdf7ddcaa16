-- Two-phase announcement: the ack's transaction claims a workflow's completion row (and
-- notifies every node on commit); the claimant then confirms it emitted the finished event by
-- setting emitted_at. A claim left unconfirmed (its node killed in between) is taken over by
-- the WorkflowHealth backstop, fenced by this column, so the event is emitted once.
ALTER TABLE workflow_completions ADD COLUMN emitted_at REAL;
UPDATE workflow_completions SET emitted_at = announced_at;
CREATE INDEX workflow_completions_unemitted_idx ON workflow_completions (announced_at)
    WHERE emitted_at IS NULL;
