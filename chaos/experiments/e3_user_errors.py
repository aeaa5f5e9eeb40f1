"""Experiment 3: user-service fails half of its answers."""

from harness.core import steady
from orderkit.faulttable import ADA
from orderkit.stats import pct, share, status_mix

NAME = "user-errors"
TITLE = "user-service: 50 % errors"
FLOOR = 0.75
HYPOTHESIS = (
    "With half of user-service's answers failing (chaos/errors user 50), retries keep at least "
    f"{FLOOR:.0%} of orders succeeding (one attempt alone would give 50 %; three give 87.5 % when the "
    "budget allows every retry), retries stay within the retry budget, and the user breakers stay closed "
    "(random 50 % failures are not an outage). After chaos/reset every order succeeds again."
)
# The per-key breaker judges after 20 calls here, not 5: with 5, a key with 50 % random errors opens
# by chance on its first five calls with probability 1/32 (README), which would make CI flaky.
ENV = {"USER_BREAKER_KEY_MIN_CALLS": "20"}
MIX = [("orders", ADA, "classic-box", 1)]
RATE = 10


def phases(cfg):
    return 3, 12, 3


def inject(run):
    run.stack.chaos("errors", "user", "50")


def restore(run):
    run.stack.chaos("reset")


def check(run):
    cfg = run.cfg
    steady(run)
    during = run.results("during")
    ok = share(during, lambda r: r.status == 201)
    run.check("during", "orders succeed despite 50 % errors", f"≥ {pct(FLOOR)} 201",
              f"{pct(ok)} of {len(during)} ({status_mix(during)})", during and ok >= FLOOR)
    a, b = run.poller.at(run.t_inject), run.poller.at(run.t_restore)
    start = run.poller.at(max(0.0, run.t_inject - 10))
    retries = b.retries("user") - a.retries("user")
    lookups = len([r for r in run.load.results if start.t <= r.t < run.t_restore])
    fault = run.t_restore - run.t_inject
    allowed = cfg["USER_RETRY_BUDGET_PERCENT"] / 100 * lookups + cfg["USER_RETRY_BUDGET_MIN_PER_SEC"] * (fault + 10)
    run.check("during", "retries within the retry budget", f"≤ {allowed:.0f}",
              f"{retries:.0f} ({retries / max(1, len(during)):.2f} per order)", retries <= allowed)
    snaps = [s for s in run.snapshots() if run.t_inject <= s.t <= run.t_restore]
    states = sorted({s.state("user") for s in snaps})
    keys = max((s.gauge("circuit_breaker_keys_open") for s in snaps), default=0)
    run.check("during", "user breakers stay closed", "closed, 0 keys open",
              f"{'/'.join(states) or 'no scrape'}, {keys:.0f} keys open", states == ["closed"] and keys == 0)
    steady(run, phase="after")
    return run.checks
