-- Jobs per (queue, state) through the (queue, state, id) index, capped at :cap.
SELECT q.value AS queue, s.value AS state,
       (SELECT count(*) FROM (SELECT 1 FROM baton_jobs j WHERE j.queue = q.value AND j.state = s.value LIMIT :cap)) AS n
FROM json_each(:queues) q CROSS JOIN json_each(:states) s
