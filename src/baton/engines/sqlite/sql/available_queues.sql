SELECT DISTINCT queue FROM baton_jobs WHERE state = 'available'
