-- Published rows are deleted, not marked (see the PostgreSQL migration).
DELETE FROM outbox WHERE published_at IS NOT NULL;
