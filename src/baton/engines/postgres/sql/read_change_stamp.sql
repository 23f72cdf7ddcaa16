-- A number that changes whenever Baton's rows change, read from the statistics collector in
-- O(1) (no table access): the dashboard polls it once for every open browser.
SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::text || ':' || coalesce(max(id), 0)::text AS stamp
FROM pg_stat_user_tables s
CROSS JOIN (SELECT max(id) AS id FROM baton_jobs) j
WHERE s.relid IN ('baton_jobs'::regclass, 'workflow_nodes'::regclass, 'baton_producers'::regclass, 'baton_cron'::regclass)
