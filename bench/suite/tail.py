"""Beating the tail (docs/tail-latency.md): hedged lookups against a slow tail of product calls,
and the upstream work deadline propagation saves; each figure beside a baseline of the same run.

Orders go through orderkit's open-loop load (a fixed rate; every order waited for), so each one
is counted exactly, and the upstream requests they cost are the simulator's own counts.
"""

import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from orderkit import promtext
from orderkit.faulttable import ADA
from orderkit.load import Load
from orderkit.net import free_port, read_json
from orderkit.stats import percentile

from .scenarios import post_order, row

RATE = 60  # orders/s: ~20 in flight at 300 ms each, room for the slow ones
ADMIN_ENV_FILE = "tail.env"


def stack_env(workdir):
    """What the tail stack runs with: the admin API, and an environment file to reload.
    Stale-if-error off: a lookup that failed on this busy machine (a breaker opened by slow
    calls) would otherwise still be a 201 from memory, and neither the p99 nor the request
    counts would say so; here every order is a live lookup or a counted failure."""
    path = os.path.join(workdir, ADMIN_ENV_FILE)
    with open(path, "w") as f:
        f.write("")
    return {"ADMIN_ADDR": f"127.0.0.1:{free_port()}", "ORDER_SERVICE_ENV_FILE": path,
            "USER_STALE_IF_ERROR_MS": "0", "PRODUCT_STALE_IF_ERROR_MS": "0"}


def reload(stack, text):
    """Writes the environment file and reloads it through the admin API."""
    cfg = stack.service.env
    with open(cfg["ORDER_SERVICE_ENV_FILE"], "w") as f:
        f.write(text)
    req = urllib.request.Request(f"http://{cfg['ADMIN_ADDR']}/admin/reload", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        r.read()


def upstream_requests(stack):
    stats = read_json(stack.admin_url + "/__admin/stats")
    return stats["users"]["total"], stats["products"]["total"]


def orders(stack, seconds):
    """Classic-box orders at RATE for `seconds`: (client latencies of the 201s, statuses, user
    requests, product requests)."""
    users0, products0 = upstream_requests(stack)
    t0 = time.monotonic()
    load = Load(stack.service_url, [("classic", ADA, "classic-box", 1)], RATE, t0, timeout=10)
    load.start()
    time.sleep(seconds)
    load.stop()  # waits for every order sent
    time.sleep(0.3)  # a cancelled hedge's request may still be on its way
    users1, products1 = upstream_requests(stack)
    results = load.results
    statuses = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return {"orders": len(results), "latencies": [r.latency for r in results if r.status == 201],
            "statuses": statuses, "users": users1 - users0, "products": products1 - products0,
            "dropped": load.dropped}


def hedges(stack):
    admin = stack.service.env["ADMIN_ADDR"]
    samples = promtext.scrape(f"http://{admin}/metrics", keep=("upstream_hedges_total",))
    return promtext.total(samples, "upstream_hedges_total", upstream="product")


def slow_tail(stack, d):
    """Order p99 with 5 % of product calls 1 s late (chaos/delay product 1s --probability 0.05),
    hedging on, against the fault-free p99 of the same run; the extra upstream requests that
    costs; and the same tail with hedging off (reloaded), which is what the service did before."""
    orders(stack, d.warmup)  # connections, and the hedge estimator's first samples
    base = orders(stack, d.long)
    stack.chaos("delay", "product", "1s", "--probability", "0.05")
    try:
        hedges_before = hedges(stack)
        tail = orders(stack, d.long)
        sent_hedges = hedges(stack) - hedges_before
        reload(stack, "PRODUCT_HEDGE_PERCENTILE=0\nUSER_HEDGE_PERCENTILE=0\n")
        unhedged = orders(stack, d.long)
    finally:
        reload(stack, "")
        stack.chaos("reset")
    p99 = lambda run: percentile(run["latencies"], 0.99)  # noqa: E731
    extra = lambda run, n: n / max(1, run["orders"]) - 1  # noqa: E731
    product_extra = extra(tail, tail["products"])
    all_extra = extra(tail, (tail["users"] + tail["products"]) / 2)
    succeeded = lambda run: run["statuses"].get(201, 0) == run["orders"] and run["orders"] > 0  # noqa: E731
    detail = {k: {"orders": r["orders"], "statuses": r["statuses"], "p50_ms": round(1000 * percentile(r["latencies"], 0.5), 1),
                  "p99_ms": round(1000 * p99(r), 1), "user_requests": r["users"], "product_requests": r["products"],
                  "dropped": r["dropped"]}
              for k, r in (("fault_free", base), ("slow_tail_hedged", tail), ("slow_tail_unhedged", unhedged))}
    base_extra = extra(base, base["products"])
    return [
        row("tail: order p99, 5 % of product calls 1 s late, hedging on", f"{1000 * p99(tail):.0f} ms",
            f"{1000 * p99(base):.0f} ms (fault-free p99, same run)", p99(tail) / p99(base), "≤ 1.5 × baseline",
            p99(tail) <= 1.5 * p99(base) and succeeded(tail) and succeeded(base), runs=detail),
        row("tail: extra product requests (hedges, retries) per order, same fault",
            f"{100 * product_extra:.1f} % ({tail['products']} for {tail['orders']} orders; {sent_hedges:.0f} hedges)",
            f"{100 * base_extra:.1f} % (fault-free, same run)", 1 + product_extra, "≤ 10 %", product_extra <= 0.10),
        row("tail: extra upstream requests per lookup, both upstreams, same fault", f"{100 * all_extra:.1f} %",
            f"{100 * extra(base, (base['users'] + base['products']) / 2):.1f} % (fault-free, same run)",
            1 + all_extra, "(informative)", None),
        row("tail: order p99, same fault, hedging off (reloaded: the service before hedging)",
            f"{1000 * p99(unhedged):.0f} ms", f"{1000 * p99(base):.0f} ms (fault-free p99, same run)",
            p99(unhedged) / p99(base), "(informative)", None),
    ]


def family_box_work(honouring, ignoring, d):
    """The family box works 60 s upstream; the service waits ORDER_DEADLINE_MS. The upstream work
    its orders cause when the simulator honours x-envoy-expected-rq-timeout-ms, against the same
    orders to a simulator that ignores it (SIM_HONOUR_DEADLINE=0)."""
    n = 4 * d.fail_fast_orders
    figures = {}
    for name, stack in (("honouring", honouring), ("ignoring", ignoring)):
        with ThreadPoolExecutor(max_workers=n) as pool:
            answers = list(pool.map(lambda _: post_order(stack, "family-box"), range(n)))
        deadline = time.monotonic() + 3
        stats = read_json(stack.admin_url + "/__admin/stats")
        while name == "honouring" and stats["working"] and time.monotonic() < deadline:
            time.sleep(0.1)
            stats = read_json(stack.admin_url + "/__admin/stats")
        products = stats["products"]
        attempts = products["by_key"].get("family-box", 0)
        # Ignored, every attempt works its whole 60 s; what is still going on is counted at 60 s.
        work_s = products["work_done_ms"] / 1000 + (60 * stats["working"] if name == "ignoring" else 0)
        figures[name] = {"orders": n, "statuses": sorted({s for s, _ in answers}), "attempts": attempts,
                         "upstream_work_s": round(work_s, 1), "still_working_after": stats["working"],
                         "abandoned": products["abandoned"], "work_saved_s": round(products["work_saved_ms"] / 1000, 1)}
    h, i = figures["honouring"], figures["ignoring"]
    return [row("deadline propagation: upstream work for %d family-box orders" % n,
                f"{h['upstream_work_s']:.1f} s ({h['attempts']} attempts, {h['abandoned']} abandoned)",
                f"{i['upstream_work_s']:.1f} s (simulator ignoring the header, {i['attempts']} attempts)",
                h["upstream_work_s"] / max(0.001, i["upstream_work_s"]), "≤ 0.05 × baseline",
                h["upstream_work_s"] <= 0.05 * i["upstream_work_s"] and h["still_working_after"] == 0, **figures)]
