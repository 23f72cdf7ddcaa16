SELECT state, count(*) AS n FROM baton_jobs
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s::text)
GROUP BY state
