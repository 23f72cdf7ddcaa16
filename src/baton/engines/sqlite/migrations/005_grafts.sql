-- Dynamic workflows (#15). A graft step's job decides at run time which steps come next: its
-- ack inserts them (once: `grafted` is claimed in that ack's transaction) and the graft's
-- dependents wait for every one of them. `parent` names the graft step that inserted a step.
-- `context` is the workflow-wide read-only mapping every step sees as `job.context`.
ALTER TABLE baton_workflows ADD COLUMN context TEXT;
ALTER TABLE workflow_nodes ADD COLUMN graft INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workflow_nodes ADD COLUMN grafted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workflow_nodes ADD COLUMN parent TEXT;
