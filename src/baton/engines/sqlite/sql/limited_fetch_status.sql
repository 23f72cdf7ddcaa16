-- After a limited fetch: are jobs still waiting (held back by a limit when the fetch took
-- fewer than it could), and in how many seconds the oldest start leaves the rate window.
SELECT EXISTS (SELECT 1 FROM baton_jobs WHERE state = 'available' AND queue = :queue) AS capped,
       (SELECT min(started_at) FROM baton_rate_window
        WHERE :rate_allowed IS NOT NULL AND queue = :queue AND started_at > :now - :rate_period)
           + :rate_period - :now AS reopen_in
