-- The W3C trace context of the request that placed the order (see the PostgreSQL migration).
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
ALTER TABLE outbox ADD COLUMN tracestate TEXT;
