INSERT INTO baton_usage (job_id, workflow_id, step, attempt, model, input_tokens, output_tokens, extra, cost)
SELECT job_id, workflow_id, step, attempt, model, input_tokens, output_tokens, extra, cost
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
    job_id bigint, workflow_id text, step text, attempt integer, model text,
    input_tokens bigint, output_tokens bigint, extra jsonb, cost numeric)
