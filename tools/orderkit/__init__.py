"""orderkit — the stack helpers that chaos/experiments, bench/, chaos/load and scripts/ share.

Layout, in the order a run uses them:
  config     the service's defaults, read from `order-service --print-config` (the one source)
  net        free loopback ports, waiting for an HTTP endpoint
  procs      one process per binary: `Simulator`, `Service` (startable many times, on any ports)
  database   a fresh PostgreSQL database of one's own, dropped at the end
  proxy      a TCP proxy that can be cut (a broker outage without stopping the shared broker)
  stack      the simulator + one service (+ the broker proxy): what `tools/stack` starts
  chaos      runs the chaos/ scripts against a simulator's admin API
  faulttable the simulator's built-in fault table: its users and where it is
  load       a steady open-loop order load; `events` consumes order.created; `promtext` parses
             /metrics; `stats` percentiles and shares

Entry points put the `tools/` directory on sys.path and `import orderkit`; nothing here edits
sys.path. Only loopback addresses are started or loaded.
"""

import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
