SELECT id FROM baton_jobs
WHERE state IN (SELECT value FROM json_each(:states)) AND worker = :worker
  AND (CASE WHEN instr(coalesce(json_extract(errors, '$[#-1].error'), ''), ':') > 0
            THEN substr(json_extract(errors, '$[#-1].error'), 1, instr(json_extract(errors, '$[#-1].error'), ':') - 1)
            ELSE coalesce(json_extract(errors, '$[#-1].error'), '') END) = :kind
  AND (:before IS NULL OR id < :before)
ORDER BY id DESC
LIMIT :limit
