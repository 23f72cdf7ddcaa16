UPDATE baton_jobs SET meta = meta || jsonb_build_object('repair', %(repair)s::text) WHERE id = ANY (%(ids)s::bigint[])
