-- Baton schema, version 12: the indexes that find a workflow's jobs and step stats by workflow
-- id are hash indexes.
--
-- Every state change of a workflow step is a new row version of baton_jobs (state is in the
-- predicate of its partial indexes, so no update is HOT), and each version took an entry in the
-- B-tree on workflow_id: a text key, placed by collation-aware comparisons of 36-character
-- ids at every level of the tree. A step is inserted, released, fetched and completed, so
-- four entries per step, and one more in workflow_step_stats. Measured on 200 000 rows with
-- random UUID workflow ids, an update of 40 000 of them cost 6.1 us more per row with the
-- B-tree and 2.9 us more with a hash index. Every lookup by workflow id is an equality
-- (`workflow_id = x`, `= ANY (...)`), which a hash index serves as well; nothing reads these
-- indexes in order. Small workflows in bench/hops.py, 8 alternating runs against the schema
-- before it (medians): server time per step 84.6 -> 75.4 us, 12 744 -> 13 589 steps/s.
--
-- A hash index has no bottom-up deletion: the entries of dead row versions go when VACUUM
-- (autovacuum) visits the table, or when an insert finds its page full of entries that index
-- scans already marked dead. The index is rebuilt here, blocking writes to the table while it
-- builds: 0.64 s for a million workflow steps on the 2-core test VM (a B-tree: 0.51 s).

DROP INDEX IF EXISTS baton_jobs_workflow_idx;
CREATE INDEX baton_jobs_workflow_idx ON baton_jobs USING hash (workflow_id) WHERE workflow_id IS NOT NULL;
DROP INDEX IF EXISTS workflow_step_stats_workflow_idx;
CREATE INDEX workflow_step_stats_workflow_idx ON workflow_step_stats USING hash (workflow_id);
