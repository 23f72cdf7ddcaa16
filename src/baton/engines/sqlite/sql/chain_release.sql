-- Release the oldest waiting link of each chain, unless an earlier link is unfinished or
-- failed and holding the chain.
-- A failed link holds its chain by its policy: meta.baton_chain, or meta.chain for links
-- inserted before 0.2 (job.CHAIN_POLICY_KEY).
UPDATE baton_jobs
SET state = CASE WHEN scheduled_at > ((julianday('now') - 2440587.5) * 86400.0) THEN 'scheduled' ELSE 'available' END,
    scheduled_at = max(scheduled_at, ((julianday('now') - 2440587.5) * 86400.0))
WHERE id IN (
    SELECT min(id) FROM baton_jobs
    WHERE chain_key IN (SELECT value FROM json_each(:keys)) AND state = 'suspended'
    GROUP BY chain_key)
  AND NOT EXISTS (
    SELECT 1 FROM baton_jobs b
    WHERE b.chain_key = baton_jobs.chain_key AND b.id < baton_jobs.id
      AND (b.state IN ('available', 'scheduled', 'executing', 'retryable')
           OR (b.state = 'discarded' AND json_extract(b.meta, CASE WHEN json_type(b.meta, '$.baton_chain') IS NULL THEN '$.chain.on_discarded' ELSE '$.baton_chain.on_discarded' END) = 'hold')
           OR (b.state = 'cancelled' AND json_extract(b.meta, CASE WHEN json_type(b.meta, '$.baton_chain') IS NULL THEN '$.chain.on_cancelled' ELSE '$.baton_chain.on_cancelled' END) = 'hold')))
RETURNING id, queue, state
