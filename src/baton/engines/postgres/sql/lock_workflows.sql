SELECT id FROM baton_workflows WHERE id = ANY (%(ids)s::text[]) ORDER BY id FOR UPDATE
