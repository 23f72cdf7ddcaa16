INSERT INTO baton_usage (job_id, workflow_id, step, attempt, model, input_tokens, output_tokens, extra, cost)
SELECT json_extract(value, '$.job_id'), json_extract(value, '$.workflow_id'), json_extract(value, '$.step'),
       json_extract(value, '$.attempt'), json_extract(value, '$.model'), json_extract(value, '$.input_tokens'),
       json_extract(value, '$.output_tokens'), json_extract(value, '$.extra'), json_extract(value, '$.cost')
FROM json_each(:rows)
