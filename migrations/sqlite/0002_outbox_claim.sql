-- The claim lease of the relay (see the PostgreSQL migration); RFC 3339 text like the other times.
ALTER TABLE outbox ADD COLUMN claimed_until text;
