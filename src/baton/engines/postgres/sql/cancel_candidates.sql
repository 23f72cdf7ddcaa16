-- Whether any job still matches a cancel's filters, without locking: a cancel of a workflow
-- repeats cancel_targets (each a new snapshot) until this finds none (transitions.cancel_jobs).
SELECT EXISTS (
    SELECT 1 FROM baton_jobs
    WHERE state NOT IN ('completed', 'discarded', 'cancelled')
      AND (%(ids)s::bigint[] IS NULL OR id = ANY (%(ids)s::bigint[]))
      AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
      AND (%(worker)s::text IS NULL OR worker = %(worker)s::text)
      AND (%(states)s::text[] IS NULL OR state = ANY (%(states)s::text[]))
      AND (%(workflow_id)s::text IS NULL OR workflow_id = %(workflow_id)s::text)
) AS found
