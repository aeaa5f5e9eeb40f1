"""The chaos experiments' own machinery: one run's phases and checks (core), /metrics and
readiness observers (observe), the Prometheus cross-check (prom), the stacks (stacks), the
report (report). What other tools share lives in tools/orderkit."""
