SELECT * FROM (
    SELECT * FROM (SELECT id, state, worker FROM baton_jobs WHERE chain_key = :key AND id <= :id ORDER BY id DESC LIMIT :n)
    UNION ALL
    SELECT * FROM (SELECT id, state, worker FROM baton_jobs WHERE chain_key = :key AND id > :id ORDER BY id LIMIT :n)
) ORDER BY id
