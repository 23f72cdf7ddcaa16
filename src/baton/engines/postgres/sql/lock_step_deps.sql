-- A retry of workflow steps (store.retry.reopen_steps): the job rows of their dependencies,
-- locked in id order until the retry commits. An ack of a dependency changes its job row in a
-- statement before the one that resolves it and counts its dependents down, so either that
-- ack committed and the retry reads the dependency resolved, or the ack's resolution starts
-- after the retry committed and finds the retried step unresolved, waiting for it.
SELECT j.id FROM baton_jobs j
WHERE j.id IN (SELECT e.dep_job_id FROM baton_workflow_deps e WHERE e.job_id = ANY (%(ids)s::bigint[]))
ORDER BY j.id
FOR SHARE
