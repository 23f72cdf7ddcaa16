-- Starts older than the window can no longer count (all of them when the queue has no rate
-- limit any more).
DELETE FROM baton_rate_window
WHERE queue = :queue AND started_at <= :now - coalesce(:rate_period, 0)
