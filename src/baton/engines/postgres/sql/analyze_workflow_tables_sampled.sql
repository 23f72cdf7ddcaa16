-- Fresh planner statistics after a bulk insert of many small workflows (insert_workflows), from
-- a sample of 3 000 rows per table instead of 30 000: many small workflows spread evenly, so a
-- small sample describes them as well, at a fifth of the cost. The statistics target is
-- restored afterwards, so a caller's own transaction (conn=) keeps its setting.
DO $$
DECLARE
    target text := current_setting('default_statistics_target');
BEGIN
    PERFORM set_config('default_statistics_target', '10', true);
    ANALYZE workflow_nodes, baton_workflow_deps;
    PERFORM set_config('default_statistics_target', target, true);
END
$$
