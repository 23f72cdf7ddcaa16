INSERT INTO workflow_nodes (workflow_id, name, job_id, deps, label, ignore_cancelled, ignore_discarded,
                            ignore_deleted, pending, graft, parent)
SELECT json_extract(value, '$.workflow_id'), json_extract(value, '$.name'), json_extract(value, '$.job_id'), json_extract(value, '$.deps'), json_extract(value, '$.label'),
       json_extract(value, '$.ignore_cancelled'), json_extract(value, '$.ignore_discarded'), json_extract(value, '$.ignore_deleted'), json_extract(value, '$.pending'),
       coalesce(json_extract(value, '$.graft'), 0), json_extract(value, '$.parent')
FROM json_each(:rows)
