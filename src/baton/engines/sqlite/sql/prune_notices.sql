DELETE FROM baton_notices WHERE inserted_at < ((julianday('now') - 2440587.5) * 86400.0) - :max_age
