-- Release the oldest waiting link of each chain, unless an earlier link is unfinished or
-- failed and holding the chain (baton_release_chains, migration 007).
SELECT * FROM baton_release_chains(%(keys)s::text[])
