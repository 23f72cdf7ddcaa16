INSERT INTO baton_cron (name, last_slot) VALUES (:name, :slot)
ON CONFLICT (name) DO UPDATE SET last_slot = excluded.last_slot, updated_at = ((julianday('now') - 2440587.5) * 86400.0)
WHERE baton_cron.last_slot < excluded.last_slot
RETURNING name
