WITH r AS MATERIALIZED (
    SELECT json_extract(value, '$.id') AS r_id, json_extract(value, '$.result') AS r_result FROM json_each(:rows)
)
UPDATE workflow_nodes SET recorded = 1, result = r_result
FROM r WHERE job_id = r_id
