-- PostgreSQL's migration 011 changes how its hop function tests which acks of a batch were
-- applied and the rows its hop functions return; SQLite has no hop functions (its acks and
-- fetches run statement by statement in Python). Nothing changes here; the version keeps both
-- engines' numbering equal.
SELECT 1;
