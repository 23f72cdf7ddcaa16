INSERT INTO baton_cron (name, last_slot) VALUES (%(name)s, %(slot)s)
ON CONFLICT (name) DO UPDATE SET last_slot = excluded.last_slot, updated_at = now()
WHERE baton_cron.last_slot < excluded.last_slot
RETURNING name
