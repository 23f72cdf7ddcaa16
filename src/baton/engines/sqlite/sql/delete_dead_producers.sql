DELETE FROM baton_producers
WHERE updated_at < ((julianday('now') - 2440587.5) * 86400.0) - :stale
  AND NOT EXISTS (
      SELECT 1 FROM baton_jobs j
      WHERE j.state = 'executing' AND json_extract(j.attempted_by, '$[1]') = baton_producers.uuid)
RETURNING uuid, node, queue
