INSERT INTO baton_workflows (id, label, context) VALUES (:id, :label, :context)
