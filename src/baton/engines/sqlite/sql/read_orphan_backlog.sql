SELECT count(*) AS n, min(attempted_at) AS oldest FROM (
    SELECT j.attempted_at FROM baton_jobs j
    WHERE j.state = 'executing'
      AND NOT EXISTS (
          SELECT 1 FROM baton_producers p
          WHERE p.uuid = json_extract(j.attempted_by, '$[1]')
            AND p.updated_at > ((julianday('now') - 2440587.5) * 86400.0)
                               - coalesce(json_extract(p.meta, '$.stale_after'), :stale))
    LIMIT :cap
)
