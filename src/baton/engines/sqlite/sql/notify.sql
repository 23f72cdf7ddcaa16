-- baton:prepare (hot path)
INSERT INTO baton_notices (channel, payload) SELECT :channel, value FROM json_each(:payloads)
