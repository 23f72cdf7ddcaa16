UPDATE workflow_nodes
SET pending = pending - (SELECT json_extract(c.value, '$.n') FROM json_each(:rows) AS c
                         WHERE json_extract(c.value, '$.id') = workflow_nodes.job_id)
WHERE job_id IN (SELECT json_extract(value, '$.id') FROM json_each(:rows))
RETURNING job_id, pending
