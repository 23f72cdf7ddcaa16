SELECT name, job_id, resolution FROM workflow_nodes WHERE workflow_id = :id
