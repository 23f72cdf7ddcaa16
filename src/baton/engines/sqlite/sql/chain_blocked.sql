-- Chain keys with a link that is unfinished, or failed and holding the chain.
-- A failed link holds its chain by its policy: meta.baton_chain, or meta.chain for links
-- inserted before 0.2 (job.CHAIN_POLICY_KEY).
SELECT DISTINCT chain_key FROM baton_jobs
WHERE chain_key IN (SELECT value FROM json_each(:keys))
  AND (state NOT IN ('completed', 'discarded', 'cancelled')
       OR (state = 'discarded' AND json_extract(meta, CASE WHEN json_type(meta, '$.baton_chain') IS NULL THEN '$.chain.on_discarded' ELSE '$.baton_chain.on_discarded' END) = 'hold')
       OR (state = 'cancelled' AND json_extract(meta, CASE WHEN json_type(meta, '$.baton_chain') IS NULL THEN '$.chain.on_cancelled' ELSE '$.baton_chain.on_cancelled' END) = 'hold'))
