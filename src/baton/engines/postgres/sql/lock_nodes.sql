SELECT name, job_id, resolution, graft, parent FROM workflow_nodes
WHERE workflow_id = %(id)s AND name = ANY (%(names)s::text[])
ORDER BY job_id
FOR SHARE
