-- A chained job's on_discarded / on_cancelled policy moves to meta.baton_chain (Baton's own key):
-- under meta.chain, where releases before 0.2 kept it, a user's meta key "chain" (a chain_by
-- key, say) replaced it and silently turned "hold" and "halt" off. Links inserted before keep
-- meta.chain and are read there when they have no meta.baton_chain. Only the hold test of the
-- release changes; the function is otherwise as migrations 007 and 008 left it.
CREATE OR REPLACE FUNCTION baton_release_chains(p_keys text[]) RETURNS TABLE (id bigint, queue text, state text)
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off SET enable_mergejoin = off SET enable_hashjoin = off
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    UPDATE baton_jobs j
    SET state = CASE WHEN j.scheduled_at > now() THEN 'scheduled' ELSE 'available' END,
        scheduled_at = greatest(j.scheduled_at, now())
    FROM unnest(p_keys) AS k(key)
    CROSS JOIN LATERAL (
        SELECT b.id FROM baton_jobs b
        WHERE b.chain_key = k.key AND b.state = 'suspended'
        ORDER BY b.id LIMIT 1
    ) AS nxt
    WHERE j.id = nxt.id
      AND NOT EXISTS (
          SELECT 1 FROM baton_jobs b
          WHERE b.chain_key = j.chain_key AND b.id < j.id
            AND b.state IN ('available', 'scheduled', 'executing', 'retryable'))
      AND NOT EXISTS (
          SELECT 1 FROM baton_jobs b
          WHERE b.chain_key = j.chain_key AND b.id < j.id AND b.state IN ('discarded', 'cancelled')
            AND coalesce(b.meta -> 'baton_chain', b.meta -> 'chain') ->> ('on_' || b.state) = 'hold')
    RETURNING j.id, j.queue, j.state;
END
$$;
