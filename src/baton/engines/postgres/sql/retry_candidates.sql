-- The jobs of `ids` a retry may move back to available, locked (in id order, so bulk retries
-- of overlapping ids queue up instead of deadlocking) until the retry commits: their states
-- cannot change between the unique check of the finished ones and the retry.
SELECT id, state, unique_key, workflow_id FROM baton_jobs
WHERE id = ANY (%(ids)s::bigint[]) AND state IN ('completed', 'discarded', 'cancelled', 'retryable')
ORDER BY id
FOR UPDATE
