-- Whether any job still matches a cancel's filters (transitions.cancel_jobs).
SELECT EXISTS (
    SELECT 1 FROM baton_jobs
    WHERE state NOT IN ('completed', 'discarded', 'cancelled')
      AND (:ids IS NULL OR id IN (SELECT value FROM json_each(:ids)))
      AND (:queue IS NULL OR queue = :queue)
      AND (:worker IS NULL OR worker = :worker)
      AND (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
      AND (:workflow_id IS NULL OR workflow_id = :workflow_id)
) AS found
