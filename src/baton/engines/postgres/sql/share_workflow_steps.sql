-- A cancel of a workflow waits for an append_workflow that is adding steps to it, and holds
-- further appends off until it commits (lock_workflow_steps). Taken before any row lock.
SELECT pg_advisory_xact_lock_shared(hashtextextended('w:' || %(id)s::text, 0))
