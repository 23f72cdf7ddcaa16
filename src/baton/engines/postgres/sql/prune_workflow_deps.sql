DELETE FROM baton_workflow_deps WHERE job_id = ANY (%(ids)s::bigint[])
