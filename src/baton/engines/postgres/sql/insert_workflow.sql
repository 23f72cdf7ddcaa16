INSERT INTO baton_workflows (id, label, context) VALUES (%(id)s, %(label)s, %(context)s::jsonb)
