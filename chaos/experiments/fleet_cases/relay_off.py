"""Orders placed on a replica whose relay is off are published by the other replicas' relays."""

import datetime
import time

from orderkit.load import Load
from orderkit.promtext import scrape, total

from .common import MIX, Outcome, describe_failures, events_delivered, failures, percentile_ms

NAME = "relay_off"
TITLE = "orders on a replica without a relay, published by the others"
HYPOTHESIS = ("every order placed on r1 (AMQP_URL unset) is published by r2's or r3's relay; the publish lag "
              "(commit → delivery to a consumer) is reported against the goal p99 < 100 ms at 200 orders/s")
GOAL_P99_MS = 100


def fleet_options(ctx, size):
    return {"replica_env": {"r1": {"AMQP_URL": None}}, "catalogue": ctx.zero_delay}


def created(at):
    return datetime.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def run(ctx, fleet, size):
    out = Outcome()
    r1 = fleet.replica("r1")
    t0 = time.monotonic()
    load = Load(r1.url, MIX, size.lag_rate, t0, timeout=10, max_in_flight=128)
    load.start()
    time.sleep(size.lag_seconds)
    load.stop()
    results = load.results
    ok = [r for r in results if r.status == 201]
    ids = {r.order_id for r in ok}
    out.check("orders on the relay-less replica succeed", "0 failures", describe_failures(results),
              results and not failures(results))
    events_delivered(out, ctx.collector, ids, 15, "every one of its events is delivered")
    published = {n: total(scrape(fleet.replica(n).url + "/metrics", keep=("outbox_published_total",)),
                          "outbox_published_total") for n in fleet.replicas}
    out.check("published by the other replicas' relays", f"r1 0, r2 + r3 ≥ {len(ids)}",
              ", ".join(f"{n} {v:.0f}" for n, v in published.items()),
              published["r1"] == 0 and published["r2"] + published["r3"] >= len(ids))
    lags = [ctx.collector.first_seen[r.order_id] - created(r.created_at) for r in ok
            if r.order_id in ctx.collector.first_seen and r.created_at]
    achieved = len(results) / size.lag_seconds
    p50, p99 = percentile_ms(lags, 0.5), percentile_ms(lags, 0.99)
    ctx.log(f"publish lag at {achieved:.0f} orders/s: p50 {p50} ms, p99 {p99} ms, max {percentile_ms(lags, 1.0)} ms "
            f"(goal p99 < {GOAL_P99_MS} ms)")
    out.figure("orders_per_s", round(achieved, 1))
    out.figure("dropped_by_the_load_generator", load.dropped)
    out.figure("publish_lag_p50_ms", p50)
    out.figure("publish_lag_p99_ms", p99)
    out.figure("publish_lag_max_ms", percentile_ms(lags, 1.0))
    out.figure("goal_p99_met", p99 is not None and p99 < GOAL_P99_MS)
    out.figure("published_by", published)
    return out
