-- Starts of a queue in its current rate window, per partition, busiest first.
SELECT key, sum(n) AS n
FROM baton_rate_window
WHERE queue = %(queue)s AND started_at > clock_timestamp() - make_interval(secs => %(rate_period)s::float8)
GROUP BY key
ORDER BY 2 DESC, 1
