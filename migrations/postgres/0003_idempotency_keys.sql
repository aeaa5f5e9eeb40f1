-- Idempotency keys (src/domain/idempotency.rs). A key is completed in the same transaction that
-- commits its order, so "the key has a response" and "the order exists" are one fact.
CREATE TABLE idempotency_keys (
    key             text        PRIMARY KEY,
    fingerprint     text        NOT NULL,              -- the canonical request; same key + another request → 422
    token           uuid        NOT NULL,              -- the lease holder; only it may complete or release
    locked_until    timestamptz NOT NULL,              -- an unfinished lease may be taken over after this
    expires_at      timestamptz NOT NULL,              -- forgotten (and purged) after this
    order_id        uuid        REFERENCES orders (id),
    response_status integer,                           -- NULL while in flight
    response_body   text,
    created_at      timestamptz NOT NULL
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
