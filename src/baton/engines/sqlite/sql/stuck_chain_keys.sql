SELECT DISTINCT j.chain_key FROM baton_jobs j
WHERE j.state = 'suspended' AND j.chain_key IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM baton_jobs b
      WHERE b.chain_key = j.chain_key AND b.id < j.id
        AND (b.state IN ('available', 'scheduled', 'executing', 'retryable')
             OR (b.state = 'discarded' AND json_extract(b.meta, '$.chain.on_discarded') = 'hold')
             OR (b.state = 'cancelled' AND json_extract(b.meta, '$.chain.on_cancelled') = 'hold')))
LIMIT :limit
