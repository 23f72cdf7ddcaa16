-- baton:prepare (hot path)
INSERT INTO baton_leaders (name, node, instance, expires_at)
VALUES ('baton', :node, :instance, ((julianday('now') - 2440587.5) * 86400.0) + :ttl)
ON CONFLICT (name) DO UPDATE
SET node = excluded.node, instance = excluded.instance, expires_at = excluded.expires_at,
    elected_at = CASE WHEN baton_leaders.instance = excluded.instance THEN baton_leaders.elected_at ELSE ((julianday('now') - 2440587.5) * 86400.0) END
WHERE baton_leaders.instance = excluded.instance OR baton_leaders.expires_at < ((julianday('now') - 2440587.5) * 86400.0)
RETURNING instance
