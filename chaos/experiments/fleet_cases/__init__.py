"""The fleet experiments, in the order chaos/experiments/fleet runs them. Each module has NAME,
TITLE, HYPOTHESIS, `fleet_options(ctx, size)` (how its fleet differs from the default one) and
`run(ctx, fleet, size)` → an Outcome of checks and figures; `teardown(ctx)` if it holds more."""

from . import idempotency, kill, pgbouncer, relay_off, rolling

CASES = [kill, rolling, idempotency, relay_off, pgbouncer]
