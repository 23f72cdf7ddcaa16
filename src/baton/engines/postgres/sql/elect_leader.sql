-- baton:prepare (hot path)
INSERT INTO baton_leaders (name, node, instance, expires_at)
VALUES ('baton', %(node)s, %(instance)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (name) DO UPDATE
SET node = excluded.node, instance = excluded.instance, expires_at = excluded.expires_at,
    elected_at = CASE WHEN baton_leaders.instance = excluded.instance THEN baton_leaders.elected_at ELSE now() END
WHERE baton_leaders.instance = excluded.instance OR baton_leaders.expires_at < now()
RETURNING instance
