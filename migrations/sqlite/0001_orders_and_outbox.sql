-- Orders and their outbox rows. An order is never committed without its event row.
-- ids are 16-byte UUID blobs (byte order = creation order for UUIDv7); times are RFC 3339 text.
CREATE TABLE orders (
    id                 blob    PRIMARY KEY,
    user_id            text    NOT NULL,
    product_code       text    NOT NULL,
    customer_fullname  text    NOT NULL,
    product_name       text    NOT NULL,
    total_amount_cents integer NOT NULL CHECK (total_amount_cents >= 0),
    created_at         text    NOT NULL
);
CREATE INDEX orders_by_user ON orders (user_id, id);

CREATE TABLE outbox (
    id              integer PRIMARY KEY AUTOINCREMENT,
    order_id        blob    NOT NULL UNIQUE REFERENCES orders (id),
    event_type      text    NOT NULL,
    payload         text    NOT NULL,
    created_at      text    NOT NULL,
    published_at    text,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at text    NOT NULL
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
