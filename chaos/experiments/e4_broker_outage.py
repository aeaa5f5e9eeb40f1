"""Experiment 4: RabbitMQ unreachable (the runner's own proxy cut; the shared broker keeps running)."""

import time

from harness.core import steady
from orderkit.events import EventCollector
from orderkit.faulttable import ADA
from orderkit.stats import pct, share, status_mix

NAME = "broker-outage"
TITLE = "RabbitMQ unreachable"
HYPOTHESIS = (
    "With the broker unreachable (live AMQP connections cut, new ones refused), orders still answer 201 "
    "(the event waits in the outbox); once it is back, every order that got a 201 arrives as an "
    "order.created event (message_id = order id) and outbox_pending returns to 0 within the relay's "
    "reconnect backoff cap + 10 s."
)
ENV = {"OUTBOX_RECONNECT_MAX_MS": "1000", "OUTBOX_POLL_INTERVAL_MS": "250"}
MIX = [("orders", ADA, "classic-box", 1)]
RATE = 20
BROKER = True  # the runner puts its proxy between the service and the broker


def phases(cfg):
    return 3, 6, 2


def setup(run):
    run.events = EventCollector(run.amqp_url)
    run.events.start()
    run.events.ready.wait(10)


def inject(run):
    run.stack.broker_down()


def restore(run):
    run.stack.broker_up()


def settle(run):
    """Waits (load stopped) until every acknowledged order's event arrived and the outbox is empty."""
    run.load.stop()
    limit = run.cfg["OUTBOX_RECONNECT_MAX_MS"] / 1000 + 10
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        wanted = {r.order_id for r in run.load.results if r.status == 201}
        snap = run.poller.snapshots[-1] if run.poller.snapshots else None
        if wanted <= run.events.ids and snap and snap.t > run.now() - 0.5 and snap.gauge("outbox_pending") == 0:
            break
        time.sleep(0.25)
    run.drained_at = run.now()


def teardown(run):
    run.events.stop()


def check(run):
    steady(run)
    during = run.results("during")
    ok = share(during, lambda r: r.status == 201)
    run.check("during", "orders still succeed", "≥ 99.0 % 201", f"{pct(ok)} of {len(during)} ({status_mix(during)})",
              during and ok >= 0.99)
    down = [b for t, b in run.poller.health if run.t_inject <= t <= run.t_restore]
    pending = max((s.gauge("outbox_pending") for s in run.snapshots() if run.t_inject <= s.t <= run.t_restore), default=0)
    run.check("during", "the outage took effect", "readiness shows broker down, outbox_pending > 0",
              f"broker {'down' if 'down' in down else '/'.join(sorted(set(down))) or '?'}, pending up to {pending:.0f}",
              "down" in down and pending > 0)
    if run.events.error:
        run.check("after", "events consumed", "consumer connected", run.events.error, False)
        return run.checks
    wanted = {r.order_id for r in run.load.results if r.status == 201}
    missing = wanted - run.events.ids
    took = run.drained_at - run.t_restore
    run.check("after", "every 201 order's event arrived", "0 missing",
              f"{len(missing)} missing of {len(wanted)} ({run.events.deliveries} deliveries seen)", not missing and wanted)
    last = run.poller.snapshots[-1]
    limit = run.cfg["OUTBOX_RECONNECT_MAX_MS"] / 1000 + 10
    run.check("after", "outbox_pending back to 0", f"0 within {limit:.0f} s of recovery",
              f"{last.gauge('outbox_pending'):.0f} after {took:.1f} s", last.gauge("outbox_pending") == 0 and took <= limit)
    return run.checks
