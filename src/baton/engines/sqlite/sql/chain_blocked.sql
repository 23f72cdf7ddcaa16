SELECT DISTINCT chain_key FROM baton_jobs
WHERE chain_key IN (SELECT value FROM json_each(:keys))
  AND (state NOT IN ('completed', 'discarded', 'cancelled')
       OR (state = 'discarded' AND json_extract(meta, '$.chain.on_discarded') = 'hold')
       OR (state = 'cancelled' AND json_extract(meta, '$.chain.on_cancelled') = 'hold'))
