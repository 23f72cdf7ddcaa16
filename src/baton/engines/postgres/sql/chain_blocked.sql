-- Chain keys with a link that is unfinished, or failed and holding the chain.
-- A failed link holds its chain by its policy: meta.baton_chain, or meta.chain for links
-- inserted before 0.2 (job.CHAIN_POLICY_KEY).
SELECT DISTINCT chain_key FROM baton_jobs
WHERE chain_key = ANY (%(keys)s::text[])
  AND (state NOT IN ('completed', 'discarded', 'cancelled')
       OR (state = 'discarded' AND coalesce(meta -> 'baton_chain', meta -> 'chain') ->> 'on_discarded' = 'hold')
       OR (state = 'cancelled' AND coalesce(meta -> 'baton_chain', meta -> 'chain') ->> 'on_cancelled' = 'hold'))
