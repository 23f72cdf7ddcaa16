-- PostgreSQL's migration 013 makes its chain release function read a link's policy from
-- meta.baton_chain (meta.chain for links inserted before 0.2); SQLite's statements are files
-- of the package and read it so already. Nothing changes here; the version keeps both
-- engines' numbering equal.
SELECT 1;
