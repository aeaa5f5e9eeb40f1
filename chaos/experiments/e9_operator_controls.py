"""Experiment 9: an operator forces the product breaker open, hands it back, and reloads a setting."""

import json
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request

from harness.core import steady
from orderkit.faulttable import ADA
from orderkit.net import free_port, read_json
from orderkit.stats import ms, pct, percentile, share, status_mix

NAME = "operator-controls"
TITLE = "product breaker forced open, back to auto, settings reloaded under load"
ADMIN = f"127.0.0.1:{free_port()}"
ENV_FILE = os.path.join(tempfile.gettempdir(), f"chaos-operator-controls-{os.getpid()}.env")
HYPOTHESIS = (
    "With the product breaker forced open on the admin API (PUT /admin/breakers/product forced_open), every "
    "order is refused 503 circuit-open, its client p99 under a tenth of the steady p99 (no upstream is "
    "waited for), and neither upstream gets a request; "
    "readiness and circuit_breaker_mode say forced_open. Handed back (auto), orders succeed again at once "
    "(no open wait to sit out), and a reload of the environment file under load (POST /admin/reload, "
    "PRODUCT_ATTEMPT_TIMEOUT_MS changed) answers 200 naming the change, counts it, and fails no order."
)
# Stale-if-error off: a forced-open breaker would otherwise let earlier answers place the orders.
ENV = {"ADMIN_ADDR": ADMIN, "ORDER_SERVICE_ENV_FILE": ENV_FILE, "PRODUCT_STALE_IF_ERROR_MS": "0"}
MIX = [("orders", ADA, "classic-box", 1)]
RATE = 20
SELF_STARTED_ONLY = True  # the admin address is the runner's own


def phases(cfg):
    return 2, 3, 3


def admin(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{ADMIN}{path}", data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def sim_requests(run):
    stats = read_json(run.stack.sim_admin_url + "/__admin/stats")
    return stats["users"]["total"] + stats["products"]["total"]


def write_env_file(text):
    with open(ENV_FILE, "w") as f:
        f.write(text)


write_env_file("PRODUCT_ATTEMPT_TIMEOUT_MS=800\n")  # the service reads it when it starts


def inject(run):
    run.notes["forced"] = admin("PUT", "/admin/breakers/product", {"mode": "forced_open"})
    run.notes["ready_forced"] = read_json(run.stack.service_url + "/health/ready")
    time.sleep(0.3)  # lookups admitted just before may still be on their way to the simulator
    run.notes["requests_forced"] = sim_requests(run)


def restore(run):
    run.notes["requests_released"] = sim_requests(run)
    run.notes["released"] = admin("PUT", "/admin/breakers/product", {"mode": "auto"})

    def reload():  # 1 s into the after phase, with orders in flight
        write_env_file("PRODUCT_ATTEMPT_TIMEOUT_MS=700\n")
        run.notes["t_reload"] = run.now()
        try:
            run.notes["reloaded"] = admin("POST", "/admin/reload")
        except (OSError, urllib.error.HTTPError) as e:
            run.notes["reloaded"] = {"error": str(e)}

    run.notes["reloader"] = threading.Timer(1.0, reload)
    run.notes["reloader"].start()


def teardown(run):
    if "reloader" in run.notes:
        run.notes["reloader"].join(10)
    try:
        os.remove(ENV_FILE)
    except OSError:
        pass


def check(run):
    steady(run)
    forced = run.notes["forced"]
    run.check("during", "the breaker reads forced", "open, forced_open", f"{forced['state']}, {forced['mode']}",
              (forced["state"], forced["mode"]) == ("open", "forced_open"))
    during = run.results("during")
    refused = share(during, lambda r: r.status == 503 and r.problem == "circuit-open")
    run.check("during", "every order refused", "100 % 503 circuit-open", f"{pct(refused)} of {len(during)} ({status_mix(during)})",
              during and refused == 1)
    base = percentile([r.latency for r in run.results("before")], 0.99)
    p99 = percentile([r.latency for r in during], 0.99)
    run.check("during", "refused without waiting on an upstream (client p99)", f"≤ {ms(base / 10)} (steady p99 / 10)",
              ms(p99), during and p99 <= base / 10)
    sent = run.notes["requests_released"] - run.notes["requests_forced"]
    run.check("during", "no upstream request while forced open", "0", str(sent), sent == 0)
    product = [b for b in run.notes["ready_forced"]["breakers"] if b["upstream"] == "product"]
    run.check("during", "readiness shows the forced mode", "forced_open", product[0]["mode"] if product else "missing",
              product and product[0]["mode"] == "forced_open")
    snaps = [s for s in run.snapshots() if run.t_injected <= s.t <= run.t_restore]
    gauge = max((s.total("circuit_breaker_mode", upstream="product", mode="forced_open") for s in snaps), default=0)
    run.check("during", "circuit_breaker_mode{mode=forced_open}", "1", f"{gauge:g}", gauge == 1)
    after = run.results("after")
    first = min((r.t for r in after if r.status == 201), default=None)
    run.check("after", "orders succeed again at once when handed back", "first 201 within 0.5 s",
              ms(first - run.t_restored) if first is not None else "never", first is not None and first - run.t_restored <= 0.5)
    reloaded = run.notes.get("reloaded", {})
    expected = [{"variable": "PRODUCT_ATTEMPT_TIMEOUT_MS", "from": "800", "to": "700"}]
    run.check("after", "POST /admin/reload under load", "200 naming PRODUCT_ATTEMPT_TIMEOUT_MS 800 → 700",
              json.dumps(reloaded.get("changed", reloaded)), reloaded.get("changed") == expected)
    counted = run.poller.snapshots[-1].total("config_reloads_total", result="applied") if run.poller.snapshots else 0
    run.check("after", "the reload is counted", "config_reloads_total{result=applied} = 1", f"{counted:g}", counted == 1)
    around = [r for r in after if first is not None and r.t >= first]
    failed = [r for r in around if r.status != 201]
    run.check("after", "no order failed across the reload", "0 of the orders after the first 201",
              f"{len(failed)} of {len(around)} ({status_mix(around)})", around and not failed)
    return run.checks
