SELECT uuid::text AS uuid, node, queue, meta, started_at, updated_at,
       extract(epoch FROM now() - updated_at) AS age
FROM baton_producers ORDER BY node, queue
