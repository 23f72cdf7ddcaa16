-- After a bulk insert of many small workflows (insert_workflows): the same ANALYZE as
-- analyze_workflow_tables (SQLite's is cheap; PostgreSQL samples fewer rows here).
ANALYZE workflow_nodes
