SELECT model, count(*) AS calls, count(cost) AS priced,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, sum(cost) AS cost
FROM baton_usage
WHERE %(since)s::timestamptz IS NULL OR recorded_at >= %(since)s::timestamptz
GROUP BY model
ORDER BY model
