"""The scenarios of the benchmark: each measures a figure and, in the same run, its baseline.

Every scenario returns rows: {scenario, figure, baseline, ratio, goal, met, detail}. `met` is
None for rows that only inform (no goal of their own).
"""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

from orderkit import promtext
from orderkit.faulttable import ADA
from orderkit.stats import percentile

from . import wrk

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)


def order_body(product):
    return json.dumps({"user_id": ADA, "product_code": product})


def ms(us):
    return us / 1000.0


def row(scenario, figure, baseline, ratio, goal, met, **detail):
    return {"scenario": scenario, "figure": figure, "baseline": baseline, "ratio": ratio,
            "goal": goal, "met": met, "detail": detail}


def post_order(stack, product, timeout=30):
    """One order through urllib: (status, seconds)."""
    req = urllib.request.Request(stack.service_url + "/v1/orders", data=order_body(product).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    return status, time.monotonic() - started


def orders_url(stack):
    return stack.service_url + "/v1/orders"


def fan_out(stack, d):
    """Order latency with the fault table's delays against the slower upstream measured directly.
    A second of the same load first: the first orders of a fresh process open its database and
    upstream connections (≈ +100 ms each), which is start-up, not steady state."""
    wrk.run(orders_url(stack), d.warmup, 4, method="POST", body=order_body("classic-box"))
    users = wrk.run(f"{stack.users_url}/users/{ADA}", d.short, 4)
    products = wrk.run(f"{stack.products_url}/products/classic-box", d.short, 4)
    orders = wrk.run(orders_url(stack), d.short, 4, method="POST", body=order_body("classic-box"))
    base50 = max(users["p50_us"], products["p50_us"])
    base99 = max(users["p99_us"], products["p99_us"])
    detail = {"orders": orders, "user_direct": users, "product_direct": products}
    return [
        row("fan-out: order p50 (user 300 ms ‖ product 200 ms)", f"{ms(orders['p50_us']):.1f} ms",
            f"{ms(base50):.1f} ms (slower upstream direct, p50)", orders["p50_us"] / base50,
            "≤ baseline + 2 ms", orders["p50_us"] <= base50 + 2000 and ok(orders, 201), **detail),
        row("fan-out: order p99", f"{ms(orders['p99_us']):.1f} ms",
            f"{ms(base99):.1f} ms (slower upstream direct, p99)", orders["p99_us"] / base99,
            "(informative)", None),
    ]


def ok(result, status):
    """Every answer had `status` and no socket error or timeout."""
    return (result["requests"] > 0 and result["statuses"].get(status, 0) == result["requests"]
            and result["socket_errors"] == 0 and result["timeouts"] == 0)


def isolation(stack, d):
    """classic-box p99 while 16 family-box orders hang, against classic-box p99 alone."""
    url, classic = orders_url(stack), order_body("classic-box")
    wrk.run(url, d.warmup, 8, method="POST", body=classic)  # 8 connections' worth of pool, warm
    alone = wrk.run(url, d.long, 8, method="POST", body=classic)
    hogs = wrk.run_async(url, d.long + 3, 16, method="POST", body=order_body("family-box"), timeout_s=10)
    time.sleep(1.5)  # let all 16 be in flight
    loaded = wrk.run(url, d.long, 8, method="POST", body=classic)
    hogged = hogs.result()
    return [row("isolation: classic-box p99, 16 family-box (60 s) in flight",
                f"{ms(loaded['p99_us']):.1f} ms", f"{ms(alone['p99_us']):.1f} ms (classic-box p99 alone)",
                loaded["p99_us"] / alone["p99_us"], "≤ 1.1 × baseline",
                loaded["p99_us"] <= 1.1 * alone["p99_us"] and ok(loaded, 201) and ok(alone, 201),
                alone=alone, loaded=loaded, family_box=hogged)]


def fail_fast(stack, d, deadline_ms):
    """A family-box order (product 60 s late) answered against ORDER_DEADLINE_MS."""
    answers = [post_order(stack, "family-box") for _ in range(d.fail_fast_orders)]
    worst = max(s for _, s in answers)
    statuses = sorted({st for st, _ in answers})
    return [row("fail fast: family-box answer (slowest of %d)" % len(answers), f"{worst * 1000:.0f} ms",
                f"{deadline_ms} ms (ORDER_DEADLINE_MS)", worst * 1000 / deadline_ms, "≤ 1.05 × deadline",
                worst * 1000 <= 1.05 * deadline_ms and statuses == [504],
                answers=[{"status": st, "ms": round(s * 1000, 1)} for st, s in answers])]


# Outcomes of attempts that reached the transport (docs/contracts.md); refusals by breaker or bulkhead are not.
SENT = ("success", "not_found", "server_error", "timeout", "connect_error", "invalid_response")


def real_attempts(stack):
    samples = promtext.scrape(stack.service_url + "/metrics", keep=("upstream_requests_total",))
    return promtext.total(samples, "upstream_requests_total", upstream="product", outcome=SENT)


def amplification_and_open_circuit(stack, d):
    """A full product outage (connections refused) under a paced load: real attempts per order;
    then, with the breaker open, a refused order's latency against GET /health/live."""
    url, classic = orders_url(stack), order_body("classic-box")
    wrk.run(url, d.short, 8, method="POST", body=classic, pace_ms=20)  # a healthy past first
    before = real_attempts(stack)
    stack.chaos("outage", "product")
    try:
        during = wrk.run(url, d.long, 8, method="POST", body=classic, pace_ms=20)
        attempts = real_attempts(stack) - before
        mark = log_offset(stack)
        refused = wrk.run(url, d.short, 1, method="POST", body=classic)
        refused_service = service_times(stack, mark, "/v1/orders")
        mark = log_offset(stack)
        live = wrk.run(stack.service_url + "/health/live", d.short, 1)
        live_service = service_times(stack, mark, "/health/live")
    finally:
        stack.chaos("reset")
    ratio = attempts / during["requests"]
    open_share = refused["statuses"].get(503, 0) / max(1, refused["requests"])
    return [
        row("amplification: product attempts per order, %d s full outage" % d.long,
            f"{attempts:.0f} attempts / {during['requests']} orders", "1.0 (one attempt per order)", ratio,
            "≤ 1.2", ratio <= 1.2, orders=during),
        row("open circuit: refused order, service time p99 (the service's own request log)",
            f"{ms(refused_service['p99_us']):.3f} ms", f"{ms(live_service['p99_us']):.3f} ms (GET /health/live p99)",
            refused_service["p99_us"] / live_service["p99_us"], "≤ 1.5 × baseline and < 1 ms",
            refused_service["p99_us"] <= 1.5 * live_service["p99_us"] and refused_service["p99_us"] < 1000
            and open_share >= 0.99, refused=refused_service, live=live_service),
        row("open circuit: refused order p99 at the client (loopback, wrk)", f"{ms(refused['p99_us']):.3f} ms",
            f"{ms(live['p99_us']):.3f} ms (GET /health/live p99)", refused["p99_us"] / live["p99_us"],
            "(informative: adds the machine's scheduling noise)", None, refused=refused, live=live),
    ]


def log_offset(stack):
    return os.path.getsize(stack.service.log_path)


def service_times(stack, offset, route):
    """Percentiles of `latency_ms` in the service's request log lines for `route` written after
    `offset`: time from request to response inside the process, without the client or kernel."""
    with open(stack.service.log_path) as f:
        f.seek(offset)
        lines = f.read().splitlines()
    took = sorted(1000 * e["latency_ms"] for e in map(_json_or_none, lines)
                  if e and "latency_ms" in e and e.get("span", {}).get("route") == route)
    if not took:
        raise RuntimeError(f"no request log lines for {route} in {stack.service.log_path}")
    at = lambda q: percentile(took, q)  # noqa: E731
    return {"requests": len(took), "p50_us": at(0.5), "p99_us": at(0.99), "p999_us": at(0.999), "max_us": took[-1]}


def _json_or_none(line):
    try:
        return json.loads(line)
    except ValueError:
        return None


BATCH_ORDERS = 16  # orders per transaction of bench/order_tx_batch.sql


def pgbench(database_url, d, clients=64, script="order_tx.sql"):
    """The database ceiling: pgbench running an order's insert statement (bench/order_tx.sql), or
    another script of bench/; transactions per second."""
    cmd = ["pgbench", "-n", "-c", str(clients), "-j", "2", "-T", str(d.long), "-f",
           os.path.join(BENCH, script), database_url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=d.long + 60)
    for line in out.stdout.splitlines():
        if line.startswith("tps ="):
            return float(line.split()[2])
    raise RuntimeError(f"pgbench printed no tps:\n{out.stdout}{out.stderr}")


def throughput(stack, d, pg_tps, batched_tps):
    """Orders/s at 64 connections (zero-delay upstreams, PostgreSQL, relay on) against the
    database's own ceiling (one order per transaction, the goal's baseline; and, informative,
    batches of `BATCH_ORDERS` as the service's group commit writes them) and the upstream's own
    GET rate, all measured in this run."""
    upstream = wrk.run(f"{stack.products_url}/products/classic-box", d.long, 64, threads=2)
    url, classic = orders_url(stack), order_body("classic-box")
    wrk.run(url, d.warmup, 64, threads=2, method="POST", body=classic)
    before, started = cpu_by_command(), time.monotonic()
    orders = wrk.run(url, d.long, 64, threads=2, method="POST", body=classic)
    cores = cpu_share(before, cpu_by_command(), time.monotonic() - started)
    drained = wait_drained(stack, 60)
    rate = orders["statuses"].get(201, 0) / (orders["duration_us"] / 1e6)
    return [
        row("throughput: orders/s at 64 connections", f"{rate:.0f} orders/s",
            f"{pg_tps:.0f} tx/s (pgbench, same statement, 64 clients)", rate / pg_tps, "≥ 0.6 × baseline",
            rate >= 0.6 * pg_tps and ok(orders, 201), orders=orders, outbox_drained_s=drained,
            cpu_cores=cores),
        row("throughput: vs pgbench of grouped inserts", f"{rate:.0f} orders/s",
            f"{batched_tps * BATCH_ORDERS:.0f} orders/s (pgbench, {BATCH_ORDERS} orders per transaction, 2 clients)",
            rate / (batched_tps * BATCH_ORDERS), "(informative: the ceiling with group commit)", None),
        row("throughput: vs the upstream's own GET rate", f"{rate:.0f} orders/s",
            f"{upstream['rate']:.0f} GET/s (product-service direct, 64 connections)",
            rate / upstream["rate"], "(informative: each order makes 2 GETs)", None, upstream=upstream),
        row("throughput: order p99 at 64 connections", f"{ms(orders['p99_us']):.1f} ms", "50 ms (goal)",
            orders["p99_us"] / 50000, "≤ 50 ms", orders["p99_us"] <= 50000),
    ]


def cpu_by_command():
    """CPU seconds (user + system) used so far by each command name's live processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        used[comm] = used.get(comm, 0.0) + (int(rest[11]) + int(rest[12])) / ticks
    return used


def cpu_share(before, after, seconds):
    """Cores each command kept busy between two `cpu_by_command` readings (≥ 0.02 only). wrk
    itself has exited by the second reading, so it is missing: the machine's rest."""
    shares = {k: (v - before.get(k, 0.0)) / seconds for k, v in after.items()}
    return {k: round(v, 2) for k, v in sorted(shares.items(), key=lambda kv: -kv[1]) if v >= 0.02}


def wait_drained(stack, seconds):
    """Seconds until outbox_pending reads 0 (None if it did not within `seconds`)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        samples = promtext.scrape(stack.service_url + "/metrics", keep=("outbox_pending",))
        if promtext.total(samples, "outbox_pending") == 0:
            return round(time.monotonic() - started, 1)
        time.sleep(0.25)
    return None


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def memory(stack, d, pid):
    """Peak RSS while 1,000 connections place orders, against RSS at idle (same process)."""
    time.sleep(1)
    idle = rss_kib(pid, "VmRSS")
    flood = wrk.run(orders_url(stack), d.long, 1000, threads=2, method="POST", body=order_body("classic-box"),
                    timeout_s=10)
    peak = rss_kib(pid, "VmHWM")
    return [row("memory: peak RSS, 1,000 connections placing orders", f"{peak / 1024:.1f} MiB",
                f"{idle / 1024:.1f} MiB (RSS at idle)", peak / idle, "≤ 64 MiB", peak <= 64 * 1024,
                flood=flood)]
