-- baton:prepare (hot path)
-- baton:text-arrays
-- A batch of plain completions, workflow steps or chain links among them, in one statement
-- (baton_complete_steps, migration 007).
SELECT * FROM baton_complete_steps(
    %(ids)s::bigint[], %(attempts)s::integer[], %(uuids)s::text[], %(wids)s::text[], %(names)s::text[],
    %(queued)s::bigint[], %(run)s::bigint[], %(results)s::text[], %(events)s::text[],
    %(chains)s::text[], %(take_queues)s::text[], %(take_uuids)s::text[], %(take_n)s::integer[],
    %(node)s::text, %(origin)s::text, %(step_channel)s::text, %(insert_channel)s::text)
