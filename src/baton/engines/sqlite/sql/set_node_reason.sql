UPDATE workflow_nodes SET pending = 0, reason = :reason WHERE job_id IN (SELECT value FROM json_each(:ids))
