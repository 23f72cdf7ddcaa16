-- baton:prepare (hot path)
SELECT id, state, attempt, attempted_by FROM baton_jobs WHERE id = ANY (%(ids)s::bigint[])
