INSERT INTO workflow_nodes (workflow_id, name, job_id, deps, label, ignore_cancelled, ignore_discarded,
                            ignore_deleted, pending, graft, parent)
SELECT workflow_id, name, job_id, deps, label, ignore_cancelled, ignore_discarded, ignore_deleted, pending,
       coalesce(graft, false), parent
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
    workflow_id text, name text, job_id bigint, deps text[], label text, ignore_cancelled boolean,
    ignore_discarded boolean, ignore_deleted boolean, pending integer, graft boolean, parent text)
