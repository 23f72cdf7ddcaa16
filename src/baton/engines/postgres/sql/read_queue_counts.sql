-- Jobs per (queue, state), each counted through the (queue, state, id) index and capped at
-- `cap`: a count that reaches the cap is replaced by an estimate (read_count_sample).
SELECT q.queue, s.state,
       (SELECT count(*) FROM (SELECT 1 FROM baton_jobs j WHERE j.queue = q.queue AND j.state = s.state LIMIT %(cap)s) x) AS n
FROM unnest(%(queues)s::text[]) AS q(queue) CROSS JOIN unnest(%(states)s::text[]) AS s(state)
