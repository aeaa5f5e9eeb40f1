-- A published event's row is deleted in the commit that ends its relay's claim (a transaction
-- holding the row's lock while the relay publishes), instead of being updated on claim and again
-- on publish: one row version per event, and a table that holds only what is still to publish.
-- An order without an outbox row reads `published: true` (src/storage/row.rs), so the rows
-- already published go now. `published_at` and `claimed_until` stay: relays of the previous
-- version still set them during a rolling upgrade, and the new claim honours both.
DELETE FROM outbox WHERE published_at IS NOT NULL;
