-- The one ack that grafts a graft step: marks it grafted (a retried, late or repeated ack of
-- the same step finds it grafted already and inserts nothing). The row lock it takes also
-- waits for an append_workflow that is adding dependents of this step (lock_nodes).
UPDATE workflow_nodes SET grafted = true
WHERE job_id = %(id)s AND graft AND NOT grafted
RETURNING workflow_id, name, label
