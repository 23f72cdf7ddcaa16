-- baton:prepare (hot path of limited queues)
-- Limited fetches of one queue take turns across nodes (docs/limits.md): a transaction-scoped
-- advisory lock on the schema and queue, released at commit, after which the next fetch's
-- statement sees every job this one started. Another key hashing alike only shares turns.
SELECT pg_advisory_xact_lock(hashtextextended('baton.queue_limits.' || current_schema() || '.' || %(queue)s, 0))
