-- PostgreSQL's migration 012 changes the rows its hop functions return; SQLite has no hop
-- functions (its acks and fetches run statement by statement in Python). Nothing changes
-- here; the version keeps both engines' numbering equal.
SELECT 1;
