SELECT step, model, attempt, count(*) AS calls, count(cost) AS priced,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost) AS cost
FROM baton_usage
WHERE workflow_id = %(workflow_id)s
GROUP BY step, model, attempt
