-- Edges from every grafted step to each waiting dependent of its graft (graft_wait).
INSERT INTO baton_workflow_deps (dep_job_id, job_id, workflow_id)
SELECT g.id, d.id, %(workflow_id)s
FROM unnest(%(ids)s::bigint[]) AS g(id), unnest(%(dependents)s::bigint[]) AS d(id)
