-- PostgreSQL's migration 008 rewrites its finished-workflow function (one pass over the
-- workflow's rows); SQLite summarises finished workflows in workflow_summary.sql, unchanged.
-- Nothing changes here; the version keeps both engines' numbering equal.
SELECT 1;
