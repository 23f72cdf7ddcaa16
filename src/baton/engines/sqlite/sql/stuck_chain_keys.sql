-- Chains with a waiting link that nothing earlier blocks: the release was missed.
-- A failed link holds its chain by its policy: meta.baton_chain, or meta.chain for links
-- inserted before 0.2 (job.CHAIN_POLICY_KEY).
SELECT DISTINCT j.chain_key FROM baton_jobs j
WHERE j.state = 'suspended' AND j.chain_key IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM baton_jobs b
      WHERE b.chain_key = j.chain_key AND b.id < j.id
        AND (b.state IN ('available', 'scheduled', 'executing', 'retryable')
             OR (b.state = 'discarded' AND json_extract(b.meta, CASE WHEN json_type(b.meta, '$.baton_chain') IS NULL THEN '$.chain.on_discarded' ELSE '$.baton_chain.on_discarded' END) = 'hold')
             OR (b.state = 'cancelled' AND json_extract(b.meta, CASE WHEN json_type(b.meta, '$.baton_chain') IS NULL THEN '$.chain.on_cancelled' ELSE '$.baton_chain.on_cancelled' END) = 'hold')))
LIMIT :limit
