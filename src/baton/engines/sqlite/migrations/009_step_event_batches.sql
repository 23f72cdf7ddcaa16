-- PostgreSQL's migration 009 sends live step events in batches from its hop functions, which
-- SQLite does not have (its step events are written by Python, batched there too). Nothing
-- changes here; the version keeps both engines' numbering equal.
SELECT 1;
