INSERT INTO baton_workflows (id, label) VALUES (%(id)s, %(label)s)
