-- Which upstreams' answers were stale (stale-if-error) when the order was placed: a comma-
-- separated subset of 'user,product' in that order; '' when both were live (every order before).
ALTER TABLE orders ADD COLUMN degraded text NOT NULL DEFAULT '';
