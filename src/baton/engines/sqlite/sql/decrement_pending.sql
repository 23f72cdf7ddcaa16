WITH c AS MATERIALIZED (
    SELECT json_extract(value, '$.id') AS c_id, json_extract(value, '$.n') AS c_n FROM json_each(:rows)
)
UPDATE workflow_nodes SET pending = pending - c_n
FROM c WHERE job_id = c_id
RETURNING job_id, pending
