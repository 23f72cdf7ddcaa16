INSERT INTO workflow_debug_logs (workflow_id, job_id, name, level, message)
SELECT json_extract(value, '$.workflow_id'), json_extract(value, '$.job_id'), json_extract(value, '$.name'), json_extract(value, '$.level'), json_extract(value, '$.message') FROM json_each(:rows)
