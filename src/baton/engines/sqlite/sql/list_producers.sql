SELECT uuid, node, queue, meta, started_at, updated_at, ((julianday('now') - 2440587.5) * 86400.0) - updated_at AS age
FROM baton_producers ORDER BY node, queue
