DELETE FROM baton_leaders WHERE name = 'baton' AND instance = :instance
