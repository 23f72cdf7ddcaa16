INSERT INTO baton_workflows (id, label) VALUES (:id, :label)
