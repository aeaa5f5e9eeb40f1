"""kill -9 one of three replicas under a steady load through HAProxy."""

import threading
import time

from orderkit.balancer import haproxy_log
from orderkit.load import Load
from orderkit.proxy import TcpProxy

from .common import MIX, Outcome, describe_failures, events_delivered, failures, stored_once

NAME = "kill"
TITLE = "kill -9 one of three replicas under steady load"
HYPOTHESIS = ("every order that got a 201 is stored once and its event delivered; the clients see at most as "
              "many failures as the killed replica had requests in flight; HAProxy takes it out of rotation "
              "within its check bound; the rows it left unpublished are published by the others")
VICTIM = "r2"
# How long the others get to publish the victim's rows: a killed relay's claim is a transaction
# that ends with its connection, so its rows are free at once; then a wake-up or a poll (1 s).
EVENTS_WAIT_S = 15


def fleet_options(ctx, size):
    # The victim reaches the broker through a proxy the experiment cuts a moment before the
    # kill: whatever it commits after the cut, it cannot publish itself.
    ctx.proxy = TcpProxy("127.0.0.1", int(ctx.amqp_url.split("@")[-1].split("/")[0].rsplit(":", 1)[1]))
    ctx.proxy.start()
    host_port = ctx.amqp_url.split("@")[-1].split("/")[0]
    proxied = ctx.amqp_url.replace(host_port, f"127.0.0.1:{ctx.proxy.port}")
    return {"replica_env": {VICTIM: {"AMQP_URL": proxied}}}


def watch_down(fleet, since, found):
    """Polls HAProxy's view of the victim until it is DOWN; records when (time.time())."""
    while time.time() - since < 15:
        if fleet.haproxy.servers_stat()[VICTIM]["status"].startswith("DOWN"):
            found["down_at"] = time.time()
            return
        time.sleep(0.02)


def run(ctx, fleet, size):
    out = Outcome()
    t0, wall_t0 = time.monotonic(), time.time()
    load = Load(fleet.url, MIX, size.rate, t0, timeout=10, max_in_flight=128)
    load.start()
    time.sleep(size.warmup)
    ctx.proxy.cut()
    t_cut = time.time()
    time.sleep(1.0)  # the victim commits orders it can no longer publish
    before = fleet.haproxy.servers_stat()[VICTIM]
    t_kill = time.time()
    fleet.kill(VICTIM)
    just_after = fleet.haproxy.servers_stat()[VICTIM]
    # In flight on the victim at the kill, as HAProxy counts them: its sessions on the victim just
    # before, plus any it sent there between that reading and the kill (sessions started in the
    # window). Races can only make this larger, never smaller.
    in_flight = before["scur"] + (just_after["stot"] - before["stot"])
    found = {}
    watcher = threading.Thread(target=watch_down, args=(fleet, t_kill, found), daemon=True)
    watcher.start()
    time.sleep(size.after)
    load.stop()
    watcher.join(15)
    results = load.results
    ok_ids = {r.order_id for r in results if r.status == 201}
    time.sleep(0.5)  # HAProxy writes its last log lines
    after = fleet.haproxy.servers_stat()[VICTIM]
    counters = {k: after[k] - before[k] for k in ("eresp", "srv_abrt", "econ", "wretr", "wredis")}
    log = haproxy_log(fleet.haproxy.log_path)
    logged = [r for r in log if r.server == VICTIM and r.start <= t_kill + 0.01 and r.end >= t_kill - 0.01]
    bad = failures(results)
    out.check("client-visible failures ≤ requests in flight on the killed replica",
              f"≤ {in_flight} (HAProxy's sessions on it at the kill: {before['scur']} before, "
              f"+{just_after['stot'] - before['stot']} sent during the kill)",
              describe_failures(results), len(bad) <= in_flight)
    bound = fleet.checks.out_of_rotation_ms()
    down_ms = round((found["down_at"] - t_kill) * 1000) if "down_at" in found else None
    out.check("HAProxy takes the killed replica out of rotation within its check bound",
              f"≤ {bound} ms (inter + (fall-1)·fastinter + fall·timeout)",
              f"{down_ms} ms" if down_ms is not None else "never DOWN", down_ms is not None and down_ms <= bound)
    routed_after = [r for r in log if r.server == VICTIM and r.start > (found.get("down_at", t_kill) + 0.01)]
    out.check("no request is routed to it once it is DOWN", "0", len(routed_after), not routed_after)
    stored_once(out, fleet.database_url, ok_ids)
    victims = {r.order_id for r in results if r.status == 201 and r.served_by == VICTIM}
    stranded = {r.order_id for r in results if r.status == 201 and r.served_by == VICTIM and wall_t0 + r.t >= t_cut}
    missing = events_delivered(out, ctx.collector, ok_ids, EVENTS_WAIT_S)
    out.check("the killed replica's orders it could not publish are published by the others",
              "all of them (committed after its broker link was cut)",
              f"{len(stranded - missing)} of {len(stranded)}", stranded and not (stranded & missing))
    out.figure("failures", [{"ms_after_kill": round((wall_t0 + r.t - t_kill) * 1000), "status": r.status,
                             "problem": r.problem, "latency_ms": round(r.latency * 1000)} for r in bad])
    out.figure("victim_counters_during_kill", counters)
    out.figure("requests", len(results))
    out.figure("failed", len(bad))
    out.figure("in_flight_on_victim_at_kill", in_flight)
    out.figure("of_those_logged_by_haproxy", len(logged))
    out.figure("kill_to_down_ms", down_ms)
    out.figure("victim_orders", len(victims))
    out.figure("victim_orders_published_by_others", len(stranded))
    out.figure("duplicate_deliveries", sum(n - 1 for i, n in ctx.collector.times_seen.items() if i in ok_ids))
    return out


def teardown(ctx):
    if getattr(ctx, "proxy", None):
        ctx.proxy.stop()
        ctx.proxy = None
