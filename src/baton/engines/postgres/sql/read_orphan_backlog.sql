-- Executing jobs whose producer row is missing or stale: what the Lifeline's next sweep rescues.
SELECT count(*) AS n, min(attempted_at) AS oldest FROM (
    SELECT j.attempted_at FROM baton_jobs j
    WHERE j.state = 'executing'
      AND NOT EXISTS (
          SELECT 1 FROM baton_producers p
          WHERE p.uuid::text = j.attempted_by[2]
            AND p.updated_at > now() - make_interval(secs => coalesce((p.meta ->> 'stale_after')::double precision, %(stale)s)))
    LIMIT %(cap)s
) o
