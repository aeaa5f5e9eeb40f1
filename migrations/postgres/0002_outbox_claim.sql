-- A short lease instead of a long-held row lock: a relay claims a batch in one statement
-- (FOR UPDATE SKIP LOCKED, so concurrent relays take disjoint rows), publishes without holding
-- any lock, then marks or releases each row. A relay that dies mid-batch leaves its lease to
-- expire, after which another relay publishes the rows again (at-least-once).
ALTER TABLE outbox ADD COLUMN claimed_until timestamptz;
