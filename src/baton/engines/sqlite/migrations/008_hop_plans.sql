-- PostgreSQL's migration 008 changes how its hop functions are planned and what they read, and
-- leaves room in workflow_nodes' pages for heap-only updates; SQLite has neither those
-- functions nor fillfactor. Nothing changes here; the version keeps both engines' numbering
-- equal.
SELECT 1;
