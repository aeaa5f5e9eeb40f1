"""Experiment 2: product-service down (its port refuses connections)."""

import math

from harness.core import steady
from harness.observe import FAILED_OUTCOMES, REAL_OUTCOMES
from orderkit import promtext
from orderkit.faulttable import ADA
from orderkit.stats import ms, pct, share, status_mix

NAME = "product-outage"
TITLE = "product-service down"
HYPOTHESIS = (
    "With product-service refusing connections (chaos/outage product), the product breaker opens within "
    "one breaker window, after no more failed attempts than it takes to outweigh a window of healthy calls "
    "(rate × window × f/(1−f) at failure rate f, plus one scrape of slack); while it is open, orders are "
    "refused without waiting on the upstream: 95 % in under 1 ms of service time and every one within a "
    "quarter of an attempt timeout (http_server_request_duration_seconds); retries stay within "
    "the retry budget (percent × lookups of the last 10 s + min-per-second × (fault + 10 s)); after chaos/reset "
    "the breaker closes within its open wait + one attempt timeout (+ 0.5 s), and orders succeed again."
)
ENV = {"ORDER_DEADLINE_MS": "1000", "PRODUCT_ATTEMPT_TIMEOUT_MS": "400",
       "PRODUCT_BREAKER_WINDOW_MS": "2000", "PRODUCT_BREAKER_MIN_CALLS": "10",
       "PRODUCT_BREAKER_FAILURE_RATE_PERCENT": "50", "PRODUCT_BREAKER_OPEN_MS": "2000",
       "PRODUCT_RETRY_BUDGET_PERCENT": "20", "PRODUCT_RETRY_BUDGET_MIN_PER_SEC": "2",
       # Failing fast is the subject; e8 is the same outage with stale-if-error on.
       "PRODUCT_STALE_IF_ERROR_MS": "0"}
MIX = [("orders", ADA, "classic-box", 1)]
RATE = 20
POLL = 0.25


def phases(cfg):
    window, open_ = cfg["PRODUCT_BREAKER_WINDOW_MS"] / 1000, cfg["PRODUCT_BREAKER_OPEN_MS"] / 1000
    return 4, window + 2 * open_ + 1, open_ + 4


def inject(run):
    run.stack.chaos("outage", "product")


def restore(run):
    run.stack.chaos("reset")


def check(run):
    cfg, snaps = run.cfg, run.snapshots()
    window, open_ = cfg["PRODUCT_BREAKER_WINDOW_MS"] / 1000, cfg["PRODUCT_BREAKER_OPEN_MS"] / 1000
    f = cfg["PRODUCT_BREAKER_FAILURE_RATE_PERCENT"] / 100
    steady(run)

    at_inject = run.poller.at(run.t_inject)
    opened = next((s for s in snaps if run.t_inject <= s.t and s.state("product") == "open"), None)
    took = opened.t - run.t_inject if opened else None
    run.check("during", "breaker opens", f"within {ms(window + POLL)} (window + one scrape)",
              f"after {ms(took)}" if opened else "never", opened and took <= window + POLL)
    rate = len(run.results("before")) / max(1e-9, run.t_inject - 1.0)
    bound = max(cfg["PRODUCT_BREAKER_MIN_CALLS"], rate * window * f / (1 - f)) + rate * POLL * cfg["PRODUCT_MAX_ATTEMPTS"]
    if opened:
        failed = opened.attempts("product", FAILED_OUTCOMES) - at_inject.attempts("product", FAILED_OUTCOMES)
        run.check("during", "failed attempts before it opened", f"≤ {bound:.0f}", f"{failed:.0f}", failed <= bound)
    else:
        run.check("during", "failed attempts before it opened", f"≤ {bound:.0f}", "never opened", False)

    fast = promtext.bucket_delta({}, {})
    total = 0.0
    for a, b in zip(snaps, snaps[1:]):
        if not (run.t_inject <= a.t and b.t <= run.t_restore):
            continue
        if a.state("product") == b.state("product") == "open" and a.transitions("product") == b.transitions("product"):
            d = promtext.bucket_delta(b.latency_buckets(), a.latency_buckets())
            fast = {le: fast.get(le, 0) + v for le, v in d.items()}
    total = fast.get(math.inf, 0.0)
    # An unoptimised (debug) build, as CI runs, spends 1–5 ms per request; the 1 ms promise is the
    # release build's. The bounds are histogram bucket boundaries, so they are read exactly. The
    # typical refusal is judged at 95 %, not 99 %: on a shared 2-core machine a few of ~100 requests
    # are preempted for some ms, which says nothing about the breaker. What would say something, a
    # refusal that waited on an attempt, is caught by the second bound: none may take a quarter of it.
    bound, why = (0.005, "debug build; 1 ms for release") if run.debug_build else (0.001, "release build")
    under = fast.get(bound, 0.0)
    p99 = promtext.quantile(fast, 0.99)
    run.check("during", "service time while open (server histogram)", f"≥ 95 % of orders ≤ {bound * 1000:g} ms ({why})",
              f"{pct(under / total)} of {total:.0f} (p99 ≤ {p99 * 1000:g} ms)" if total else "no open window",
              total >= 5 and under / total >= 0.95)
    # The largest bucket boundary within a quarter of the attempt timeout (0.1 s at 400 ms), so
    # any timeout setting is read exactly, never between boundaries.
    ceiling = max((le for le in fast if le <= cfg["PRODUCT_ATTEMPT_TIMEOUT_MS"] / 4000), default=0.0)
    within = fast.get(ceiling, 0.0)
    run.check("during", "no refusal waited on an attempt (server histogram)",
              f"100 % of orders ≤ {ceiling * 1000:g} ms (within a quarter of the attempt timeout)",
              f"{pct(within / total)} of {total:.0f}" if total else "no open window", total >= 5 and within == total)
    during = run.results("during")
    refused = share(during, lambda r: r.problem == "circuit-open")
    run.check("during", "clients told circuit-open", "≥ 50 % 503 circuit-open",
              f"{pct(refused)} of {len(during)} ({status_mix(during)})", refused >= 0.5)

    end = run.poller.at(run.t_restore)
    start = run.poller.at(max(0.0, run.t_inject - 10))
    retries = end.retries("product") - at_inject.retries("product")
    lookups = len([r for r in run.load.results if start.t <= r.t < run.t_restore])
    fault = run.t_restore - run.t_inject
    allowed = cfg["PRODUCT_RETRY_BUDGET_PERCENT"] / 100 * lookups + cfg["PRODUCT_RETRY_BUDGET_MIN_PER_SEC"] * (fault + 10)
    real = end.attempts("product", REAL_OUTCOMES) - at_inject.attempts("product", REAL_OUTCOMES)
    orders = len(during)
    run.check("during", "retries within the retry budget", f"≤ {allowed:.0f}",
              f"{retries:.0f} ({real / max(1, orders):.2f} real attempts per order)", retries <= allowed)

    closed = next((s for s in snaps if s.t >= run.t_restore and s.state("product") == "closed"), None)
    limit = open_ + cfg["PRODUCT_ATTEMPT_TIMEOUT_MS"] / 1000 + 0.5
    took = closed.t - run.t_restore if closed else None
    run.check("after", "breaker closes after chaos/reset", f"within {ms(limit)} (open wait + attempt + 0.5 s)",
              ms(took) if closed else "never", closed and took <= limit)
    later = [r for r in run.results("after") if closed and r.t >= closed.t + 0.5]
    ok = share(later, lambda r: r.status == 201)
    run.check("after", "orders succeed once closed", "≥ 99.0 % 201", f"{pct(ok)} of {len(later)} ({status_mix(later)})",
              later and ok >= 0.99)
    return run.checks
