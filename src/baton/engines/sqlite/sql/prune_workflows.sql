DELETE FROM baton_workflows WHERE id IN (SELECT value FROM json_each(:ids))
