-- append_workflow: no cancel of this workflow runs while steps are added to it (a cancel's
-- snapshot would miss them). Taken before anything else, and shared by cancels
-- (share_workflow_steps), so it never waits while holding a lock another waiter needs.
SELECT pg_advisory_xact_lock(hashtextextended('w:' || %(id)s::text, 0))
