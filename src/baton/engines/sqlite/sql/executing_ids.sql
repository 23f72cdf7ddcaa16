SELECT id FROM baton_jobs WHERE state = 'executing' AND json_extract(attempted_by, '$[1]') = :uuid
