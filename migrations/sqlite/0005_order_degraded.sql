-- Which upstreams' answers were stale (see the PostgreSQL migration).
ALTER TABLE orders ADD COLUMN degraded text NOT NULL DEFAULT '';
