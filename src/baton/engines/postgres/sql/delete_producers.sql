-- baton:prepare (hot path)
DELETE FROM baton_producers WHERE uuid = ANY (%(uuids)s::uuid[])
