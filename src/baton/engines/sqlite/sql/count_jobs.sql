SELECT state, count(*) AS n FROM baton_jobs WHERE (:queue IS NULL OR queue = :queue) GROUP BY state
