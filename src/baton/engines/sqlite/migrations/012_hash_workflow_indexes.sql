-- PostgreSQL's migration 013 turns its workflow-id indexes into hash indexes; SQLite has only
-- B-trees (and compares text by bytes, without a collation's cost). Nothing changes here; the
-- version keeps both engines' numbering equal.
SELECT 1;
