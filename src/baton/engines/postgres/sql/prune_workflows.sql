DELETE FROM baton_workflows WHERE id = ANY (%(ids)s::text[])
