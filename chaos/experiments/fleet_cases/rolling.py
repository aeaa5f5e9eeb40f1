"""Rolling restart: SIGTERM each replica in turn, start it again, wait until HAProxy has it back."""

import time

from orderkit.balancer import haproxy_log
from orderkit.load import Load

from .common import MIX, Outcome, describe_failures, events_delivered, failures, stored_once

NAME = "rolling"
TITLE = "rolling restart of three replicas under steady load"
HYPOTHESIS = ("no client sees a failure: each replica leaves HAProxy's rotation while it still serves "
              "(SHUTDOWN_DELAY_MS covers the checks), drains, restarts and is back before the next one goes")


def fleet_options(ctx, size):
    return {}


def run(ctx, fleet, size):
    out = Outcome()
    t0 = time.monotonic()
    load = Load(fleet.url, MIX, size.rate, t0, timeout=10, max_in_flight=128)
    load.start()
    time.sleep(size.warmup)
    timings = {}
    try:
        for name in fleet.replicas:
            t_term = time.time()
            fleet.replica(name).proc.terminate()
            down = fleet.haproxy.wait_status(name, "DOWN", 15)
            fleet.replica(name).proc.wait(30)
            exited = time.time() - t_term
            fleet.restart(name)
            up = fleet.haproxy.wait_status(name, "UP", 15)
            timings[name] = {"sigterm_to_down_ms": round(down * 1000), "sigterm_to_exit_ms": round(exited * 1000),
                             "ready_to_up_ms": round(up * 1000)}
            ctx.log(f"{name}: out of rotation {timings[name]['sigterm_to_down_ms']} ms after SIGTERM, exited after "
                    f"{timings[name]['sigterm_to_exit_ms']} ms, back in rotation {timings[name]['ready_to_up_ms']} ms "
                    "after ready")
        time.sleep(size.after)
    finally:
        load.stop()
    results = load.results
    ok_ids = {r.order_id for r in results if r.status == 201}
    out.check("no failed request during the rolling restart", "0 failures", describe_failures(results),
              results and not failures(results))
    delay = int(fleet.replica("r1").env["SHUTDOWN_DELAY_MS"])
    slowest = max(t["sigterm_to_down_ms"] for t in timings.values())
    out.check("each replica leaves rotation before it stops serving", f"SIGTERM → DOWN < SHUTDOWN_DELAY_MS ({delay} ms)",
              f"slowest {slowest} ms", slowest < delay)
    log = haproxy_log(fleet.haproxy.log_path)
    retried = sum(1 for r in log if r.retries > 0)
    stored_once(out, fleet.database_url, ok_ids)
    events_delivered(out, ctx.collector, ok_ids, 15)
    out.figure("requests", len(results))
    out.figure("failed", len(failures(results)))
    out.figure("haproxy_retries", retried)
    out.figure("per_replica", timings)
    return out
