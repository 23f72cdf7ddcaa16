SELECT recorded, result FROM workflow_nodes WHERE job_id = :id
