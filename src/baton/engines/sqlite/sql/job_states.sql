-- baton:prepare (hot path)
SELECT id, state, attempt, attempted_by FROM baton_jobs WHERE id IN (SELECT value FROM json_each(:ids))
