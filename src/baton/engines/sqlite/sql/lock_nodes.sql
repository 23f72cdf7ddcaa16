-- The writer lock already serialises this transaction with every ack.
SELECT name, job_id, resolution, graft, parent FROM workflow_nodes
WHERE workflow_id = :id AND name IN (SELECT value FROM json_each(:names))
