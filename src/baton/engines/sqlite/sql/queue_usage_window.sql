-- Starts of a queue in its current rate window, per partition, busiest first.
SELECT key, sum(n) AS n
FROM baton_rate_window
WHERE queue = :queue AND started_at > :now - :rate_period
GROUP BY key
ORDER BY 2 DESC, 1
