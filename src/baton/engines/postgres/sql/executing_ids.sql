SELECT id FROM baton_jobs WHERE state = 'executing' AND attempted_by[2] = %(uuid)s::text
