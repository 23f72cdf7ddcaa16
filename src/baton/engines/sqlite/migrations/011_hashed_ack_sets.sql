-- PostgreSQL's migration 011 changes how its hop function tests which acks of a batch were
-- applied; SQLite has no hop function (its acks run statement by statement in Python).
-- Nothing changes here; the version keeps both engines' numbering equal.
SELECT 1;
