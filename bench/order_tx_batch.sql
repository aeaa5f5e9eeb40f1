-- pgbench script: the database work of 16 orders (no Idempotency-Key) written as one batch, shaped
-- as src/storage/pg_insert.rs INSERT_MANY writes a group commit's batch: the orders and their
-- outbox rows in one statement. The informative ceiling of grouped inserts (docs/fleet.md).
WITH i AS (
  SELECT gen_random_uuid() AS id, now() AS created_at, n FROM generate_series(1, 16) AS n),
o AS (
  INSERT INTO orders (id, user_id, product_code, customer_fullname, product_name,
                      total_amount_cents, created_at)
  SELECT id, '7c11e1ce2741', 'classic-box', 'Ada Lovelace', 'Classic Box', 999, created_at FROM i
  RETURNING id),
x AS (
  INSERT INTO outbox (order_id, event_type, payload, created_at, next_attempt_at)
  SELECT i.id, 'order.created',
         jsonb_build_object('order', jsonb_build_object('order_id', i.id, 'customer_fullname', 'Ada Lovelace',
                            'product_name', 'Classic Box', 'total_amount', 9.99, 'created_at', i.created_at)),
         i.created_at, i.created_at
  FROM i JOIN o ON o.id = i.id ORDER BY i.n RETURNING 1)
SELECT count(*) FROM x;
