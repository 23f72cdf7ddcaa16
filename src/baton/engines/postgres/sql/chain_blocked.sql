-- Chain keys with a link that is unfinished, or failed and holding the chain.
SELECT DISTINCT chain_key FROM baton_jobs
WHERE chain_key = ANY (%(keys)s::text[])
  AND (state NOT IN ('completed', 'discarded', 'cancelled')
       OR (state = 'discarded' AND meta -> 'chain' ->> 'on_discarded' = 'hold')
       OR (state = 'cancelled' AND meta -> 'chain' ->> 'on_cancelled' = 'hold'))
