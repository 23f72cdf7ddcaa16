SELECT name, job_id, resolution, graft, parent FROM workflow_nodes WHERE workflow_id = :id
