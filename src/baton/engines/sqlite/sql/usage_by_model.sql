SELECT model, count(*) AS calls, count(cost) AS priced,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, baton_decimal_sum(cost) AS cost
FROM baton_usage
WHERE :since IS NULL OR recorded_at >= :since
GROUP BY model
ORDER BY model
