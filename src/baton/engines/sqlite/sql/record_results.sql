UPDATE workflow_nodes
SET recorded = 1,
    result = (SELECT json_extract(r.value, '$.result') FROM json_each(:rows) AS r
              WHERE json_extract(r.value, '$.id') = workflow_nodes.job_id)
WHERE job_id IN (SELECT json_extract(value, '$.id') FROM json_each(:rows))
