-- The one ack that grafts a graft step: marks it grafted (a retried, late or repeated ack of
-- the same step finds it grafted already and inserts nothing).
UPDATE workflow_nodes SET grafted = 1
WHERE job_id = :id AND graft AND NOT grafted
RETURNING workflow_id, name, label
