"""Experiment 8: product-service down, but orders keep selling from its last good answers."""

import json
import urllib.request

from harness.core import steady
from orderkit.faulttable import ADA
from orderkit.stats import ms, pct, share, status_mix

NAME = "stale-if-error"
TITLE = "product-service down, stale-if-error on"
HYPOTHESIS = (
    "With product-service refusing connections (chaos/outage product) after a healthy period, orders for a "
    "product answered before keep succeeding (≥ 99 % 201) from its last good answer (PRODUCT_STALE_IF_ERROR_MS, "
    "default 5 min): each marked degraded: [\"product\"] when read back, at the price seen before, each "
    "counted in upstream_fallbacks_total; the product breaker still opens (the dead upstream is spared). "
    "After chaos/reset, orders are placed from live answers again (degraded: []) within the breaker's "
    "open wait + 1 s."
)
ENV = {"ORDER_DEADLINE_MS": "1000", "PRODUCT_ATTEMPT_TIMEOUT_MS": "400",
       "PRODUCT_BREAKER_WINDOW_MS": "2000", "PRODUCT_BREAKER_MIN_CALLS": "10",
       "PRODUCT_BREAKER_FAILURE_RATE_PERCENT": "50", "PRODUCT_BREAKER_OPEN_MS": "2000"}
MIX = [("orders", ADA, "classic-box", 1)]
RATE = 20


def phases(cfg):
    return 2.5, 4, cfg["PRODUCT_BREAKER_OPEN_MS"] / 1000 + 2


def inject(run):
    run.stack.chaos("outage", "product")


def restore(run):
    run.stack.chaos("reset")


def read_order(run, order_id):
    with urllib.request.urlopen(f"{run.stack.service_url}/v1/orders/{order_id}", timeout=3) as r:
        return json.load(r)


def check(run):
    steady(run)
    live_price = {read_order(run, r.order_id)["total_amount"] for r in run.results("before") if r.status == 201}
    during = run.results("during")
    ok = share(during, lambda r: r.status == 201)
    run.check("during", "orders keep succeeding", "≥ 99.0 % 201", f"{pct(ok)} of {len(during)} ({status_mix(during)})",
              during and ok >= 0.99)
    placed = [read_order(run, r.order_id) for r in during if r.status == 201]
    marked = share(placed, lambda o: o["degraded"] == ["product"])
    prices = {o["total_amount"] for o in placed}
    run.check("during", "read back marked degraded, at the price seen before", f"100 % [\"product\"], {sorted(live_price)}",
              f"{pct(marked)} of {len(placed)}, {sorted(prices)}", placed and marked == 1 and prices == live_price)
    a, b = run.poller.at(run.t_inject), run.poller.at(run.t_restore)
    fallbacks = b.total("upstream_fallbacks_total", upstream="product") - a.total("upstream_fallbacks_total", upstream="product")
    run.check("during", "counted in upstream_fallbacks_total", f"≈ {len(placed)} (one per order, ±1 scrape)",
              f"{fallbacks:.0f}", abs(fallbacks - len(placed)) <= RATE / 2)
    states = {s.state("product") for s in run.snapshots() if run.t_inject <= s.t <= run.t_restore}
    run.check("during", "the product breaker still opens", "open at some point", "/".join(sorted(states)) or "no scrape",
              "open" in states)
    limit = run.cfg["PRODUCT_BREAKER_OPEN_MS"] / 1000 + 1
    after = [r for r in run.results("after") if r.status == 201]
    live = [r for r in after if not read_order(run, r.order_id)["degraded"]]
    took = (min(r.t for r in live) - run.t_restore) if live else None
    run.check("after", "live answers again after chaos/reset", f"within {ms(limit)} (open wait + 1 s)",
              ms(took) if live else "never", live and took <= limit)
    return run.checks
