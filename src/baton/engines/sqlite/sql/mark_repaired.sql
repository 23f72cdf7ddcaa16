UPDATE baton_jobs SET meta = json_set(meta, '$.repair', :repair) WHERE id IN (SELECT value FROM json_each(:ids))
