-- The AUTOINCREMENT counter row exists once a job was ever inserted; create it if not yet.
INSERT INTO sqlite_sequence (name, seq)
SELECT 'baton_jobs', coalesce((SELECT max(id) FROM baton_jobs), 0)
WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'baton_jobs')
