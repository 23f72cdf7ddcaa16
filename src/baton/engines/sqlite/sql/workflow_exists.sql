SELECT 1 AS found FROM baton_workflows WHERE id = :workflow_id
