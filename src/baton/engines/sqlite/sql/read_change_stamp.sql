-- A number that changes whenever the database changes: data_version moves when another
-- connection commits, total_changes() when this one does.
SELECT (SELECT data_version FROM pragma_data_version) || ':' || total_changes() AS stamp
