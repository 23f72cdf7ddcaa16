-- A contiguous block of job ids: the writer lock is held, so nobody interleaves.
UPDATE sqlite_sequence SET seq = seq + :n WHERE name = 'baton_jobs'
RETURNING seq AS last, ((julianday('now') - 2440587.5) * 86400.0) AS now
