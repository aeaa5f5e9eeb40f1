-- Idempotency keys (see the PostgreSQL migration); ids are UUID blobs, times RFC 3339 text.
CREATE TABLE idempotency_keys (
    key             text    PRIMARY KEY,
    fingerprint     text    NOT NULL,
    token           blob    NOT NULL,
    locked_until    text    NOT NULL,
    expires_at      text    NOT NULL,
    order_id        blob    REFERENCES orders (id),
    response_status integer,
    response_body   text,
    created_at      text    NOT NULL
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
