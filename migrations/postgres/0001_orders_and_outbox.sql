-- Orders and their outbox rows. An order is never committed without its event row.
CREATE TABLE orders (
    id                 uuid        PRIMARY KEY,          -- UUIDv7: creation-ordered, used for keyset paging
    user_id            text        NOT NULL,
    product_code       text        NOT NULL,
    customer_fullname  text        NOT NULL,
    product_name       text        NOT NULL,
    total_amount_cents bigint      NOT NULL CHECK (total_amount_cents >= 0),
    created_at         timestamptz NOT NULL
);
CREATE INDEX orders_by_user ON orders (user_id, id);

CREATE TABLE outbox (
    id              bigserial   PRIMARY KEY,             -- publish order
    order_id        uuid        NOT NULL UNIQUE REFERENCES orders (id),
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL,
    published_at    timestamptz,
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz NOT NULL
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
