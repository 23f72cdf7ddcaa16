-- Release the oldest waiting link of each chain, unless an earlier link is unfinished or
-- failed and holding the chain.
UPDATE baton_jobs j
SET state = CASE WHEN j.scheduled_at > now() THEN 'scheduled' ELSE 'available' END,
    scheduled_at = greatest(j.scheduled_at, now())
FROM (
    SELECT DISTINCT ON (chain_key) id FROM baton_jobs
    WHERE chain_key = ANY (%(keys)s::text[]) AND state = 'suspended'
    ORDER BY chain_key, id
) AS nxt
WHERE j.id = nxt.id
  AND NOT EXISTS (
      SELECT 1 FROM baton_jobs b
      WHERE b.chain_key = j.chain_key AND b.id < j.id
        AND (b.state IN ('available', 'scheduled', 'executing', 'retryable')
             OR (b.state = 'discarded' AND b.meta -> 'chain' ->> 'on_discarded' = 'hold')
             OR (b.state = 'cancelled' AND b.meta -> 'chain' ->> 'on_cancelled' = 'hold')))
RETURNING j.id, j.queue, j.state
