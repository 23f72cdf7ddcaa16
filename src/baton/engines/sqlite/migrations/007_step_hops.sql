-- PostgreSQL's migration 007 adds functions that ack and fetch workflow steps in one statement;
-- SQLite runs those steps statement by statement inside its single writer, where a statement
-- costs no round trip. Nothing changes here; the version keeps both engines' numbering equal.
SELECT 1;
