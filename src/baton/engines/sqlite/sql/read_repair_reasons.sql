SELECT coalesce(json_extract(meta, '$.repair'), CASE WHEN json_extract(meta, '$.rescued') IS NOT NULL THEN 'orphaned' END,
                'unknown') AS reason, count(*) AS n
FROM (SELECT meta FROM baton_jobs
      WHERE (json_extract(meta, '$.repair') IS NOT NULL OR json_extract(meta, '$.rescued') IS NOT NULL)
      ORDER BY id DESC LIMIT :n)
GROUP BY 1
ORDER BY 2 DESC
