SELECT name, last_slot, updated_at FROM baton_cron ORDER BY name
