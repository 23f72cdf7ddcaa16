WITH stuck AS (
    SELECT n.job_id FROM workflow_nodes n
    JOIN baton_jobs j ON j.id = n.job_id
    WHERE n.resolution IS NULL AND j.state = 'suspended'
      AND NOT EXISTS (
          SELECT 1 FROM baton_workflow_deps e JOIN workflow_nodes d ON d.job_id = e.dep_job_id
          WHERE e.job_id = n.job_id AND d.resolution IS NULL)
    ORDER BY n.job_id
    LIMIT :limit
)
SELECT s.job_id, n.workflow_id, d.name AS dep_name, d.resolution AS dep_resolution,
       n.ignore_cancelled, n.ignore_discarded, n.ignore_deleted
FROM stuck s
JOIN workflow_nodes n ON n.job_id = s.job_id
LEFT JOIN baton_workflow_deps e ON e.job_id = s.job_id
LEFT JOIN workflow_nodes d ON d.job_id = e.dep_job_id
