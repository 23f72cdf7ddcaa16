DELETE FROM baton_producers p
WHERE p.updated_at < now() - make_interval(secs => %(stale)s)
  AND NOT EXISTS (SELECT 1 FROM baton_jobs j WHERE j.state = 'executing' AND j.attempted_by[2] = p.uuid::text)
RETURNING p.uuid::text AS uuid, p.node, p.queue
