"""Experiment 6: a slow tail — 5 % of product calls 1 s late — against hedged lookups."""

from harness.core import steady
from orderkit.faulttable import ADA
from orderkit.stats import ms, pct, percentile, share, status_mix

NAME = "hedging"
TITLE = "product-service: 5 % of calls 1 s late"
SLOW_SHARE = 0.05
HYPOTHESIS = (
    f"With {SLOW_SHARE:.0%} of product calls 1 s late (chaos/delay product 1s --probability {SLOW_SHARE}), hedged "
    "lookups keep every order succeeding and the order p99 within 1.5 × the steady p99 (without hedging a late "
    "call waits out the 800 ms attempt timeout and a retry: p99 ≈ 1 s); hedges are sent "
    "(upstream_hedges_total rises), and hedges plus retries stay within the retry budget they share "
    "(percent × lookups of the last 10 s + min-per-second × (fault + 10 s)). After chaos/reset orders are steady."
)
ENV = {}  # the defaults: hedging on at the p95 of recent good answers
MIX = [("orders", ADA, "classic-box", 1)]
RATE = 20


def phases(cfg):
    # 4 s before: the hedge estimator needs 16 recent good answers to tell slow from normal.
    return 4, 6, 1.5


def inject(run):
    run.stack.chaos("delay", "product", "1s", "--probability", str(SLOW_SHARE))


def restore(run):
    run.stack.chaos("reset")


def check(run):
    cfg = run.cfg
    steady(run)
    base = percentile([r.latency for r in run.results("before") if r.status == 201], 0.99)
    during = run.results("during")
    ok = share(during, lambda r: r.status == 201)
    run.check("during", "orders succeed despite the slow tail", "≥ 99.0 % 201",
              f"{pct(ok)} of {len(during)} ({status_mix(during)})", during and ok >= 0.99)
    p99 = percentile([r.latency for r in during], 0.99)
    run.check("during", "order p99 (client)", f"≤ {ms(1.5 * base)} (1.5 × steady {ms(base)})", ms(p99),
              during and p99 <= 1.5 * base)
    a, b = run.poller.at(run.t_inject), run.poller.at(run.t_restore + 0.5)
    hedges = b.total("upstream_hedges_total", upstream="product") - a.total("upstream_hedges_total", upstream="product")
    retries = b.retries("product") - a.retries("product")
    run.check("during", "slow lookups were hedged", "≥ 1 hedge", f"{hedges:.0f} hedges for {len(during)} orders",
              hedges >= 1)
    start = run.poller.at(max(0.0, run.t_inject - 10))
    lookups = len([r for r in run.load.results if start.t <= r.t < run.t_restore])
    fault = run.t_restore - run.t_inject
    allowed = (cfg["PRODUCT_RETRY_BUDGET_PERCENT"] / 100 * lookups
               + cfg["PRODUCT_RETRY_BUDGET_MIN_PER_SEC"] * (fault + 10))
    run.check("during", "hedges + retries within the retry budget", f"≤ {allowed:.0f}",
              f"{hedges:.0f} + {retries:.0f} ({(hedges + retries) / max(1, len(during)):.2f} per order)",
              hedges + retries <= allowed)
    steady(run, phase="after")
    return run.checks
