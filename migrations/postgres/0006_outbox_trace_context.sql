-- The W3C trace context of the request that placed the order, so the relay that publishes its
-- event (maybe another replica's, seconds later) continues the order's trace and passes it on
-- in the message. NULL when tracing was off. Adding nullable columns without a default
-- rewrites nothing and is safe while older replicas still insert (they leave them NULL).
ALTER TABLE outbox ADD COLUMN traceparent text, ADD COLUMN tracestate text;
