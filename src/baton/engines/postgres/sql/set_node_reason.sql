UPDATE workflow_nodes SET pending = 0, reason = %(reason)s WHERE job_id = ANY (%(ids)s::bigint[])
