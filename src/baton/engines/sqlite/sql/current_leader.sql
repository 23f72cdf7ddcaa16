-- baton:prepare (hot path)
SELECT node, instance, elected_at, expires_at FROM baton_leaders WHERE name = 'baton' AND expires_at > ((julianday('now') - 2440587.5) * 86400.0)
