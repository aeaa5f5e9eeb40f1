-- pgbench script: the database work of one order (no Idempotency-Key), shaped as
-- src/storage/postgres.rs insert_order sends it: the order row and its outbox row in one statement.
WITH o AS (
  INSERT INTO orders (id, user_id, product_code, customer_fullname, product_name,
                      total_amount_cents, created_at)
  VALUES (gen_random_uuid(), '7c11e1ce2741', 'classic-box', 'Ada Lovelace', 'Classic Box', 999, now())
  RETURNING id, created_at),
x AS (
  INSERT INTO outbox (order_id, event_type, payload, created_at, next_attempt_at)
  SELECT id, 'order.created',
         jsonb_build_object('order', jsonb_build_object('order_id', id, 'customer_fullname', 'Ada Lovelace',
                            'product_name', 'Classic Box', 'total_amount', 9.99, 'created_at', created_at)),
         created_at, created_at
  FROM o RETURNING 1)
SELECT count(*) FROM x;
