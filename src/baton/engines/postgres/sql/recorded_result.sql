SELECT recorded, result::text AS result FROM workflow_nodes WHERE job_id = %(id)s
