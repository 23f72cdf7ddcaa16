-- The jobs of `ids` a retry may move back to available (the single writer keeps them as they
-- are until the retry commits).
SELECT id, state, unique_key, workflow_id FROM baton_jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND state IN ('completed', 'discarded', 'cancelled', 'retryable')
ORDER BY id
