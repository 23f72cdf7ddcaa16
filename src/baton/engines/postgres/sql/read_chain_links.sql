-- The links of a chain around one job: up to `n` before it and `n` after it, in order.
SELECT * FROM (
    (SELECT id, state, worker FROM baton_jobs WHERE chain_key = %(key)s AND id <= %(id)s ORDER BY id DESC LIMIT %(n)s)
    UNION ALL
    (SELECT id, state, worker FROM baton_jobs WHERE chain_key = %(key)s AND id > %(id)s ORDER BY id LIMIT %(n)s)
) links ORDER BY id
