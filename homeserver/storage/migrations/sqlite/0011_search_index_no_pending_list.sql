-- Version kept in step with the PostgreSQL migrations; FTS5 has no pending list to turn off.
SELECT 1;
