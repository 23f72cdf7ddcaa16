-- PostgreSQL's migration 010 changes how its hop function checks for a waiting job of higher
-- priority; SQLite has no hop function (its acks run statement by statement in Python).
-- Nothing changes here; the version keeps both engines' numbering equal.
SELECT 1;
