-- Edges from every grafted step to each waiting dependent of its graft (graft_wait).
INSERT INTO baton_workflow_deps (dep_job_id, job_id, workflow_id)
SELECT g.value, d.value, :workflow_id
FROM json_each(:ids) AS g, json_each(:dependents) AS d
