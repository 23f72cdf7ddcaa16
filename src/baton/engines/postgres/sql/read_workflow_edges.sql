-- Every dependency edge into the given steps' jobs (sub-workflow and grafted steps included,
-- whose edges the step names alone do not show).
SELECT dep_job_id, job_id FROM baton_workflow_deps WHERE job_id = ANY (%(ids)s::bigint[])
