-- The workflow rows of a bulk insert (insert_workflows), up to 5 000 from one JSON array;
-- a context object comes back from json_extract as its JSON text.
INSERT INTO baton_workflows (id, label, context)
SELECT json_extract(value, '$.id'), json_extract(value, '$.label'), json_extract(value, '$.context')
FROM json_each(:rows)
