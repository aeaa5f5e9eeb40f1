"""Prometheus, when present: does the dashboard's source saw what the runner saw?"""

import json
import time
import urllib.parse
import urllib.request


def query(base, expr, at):
    url = f"{base.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(body.get("error", "query failed"))
    return [float(s["value"][1]) for s in body["data"]["result"]]


def cross_check(run, base, job, scrape_interval):
    """Adds 'prometheus' rows: it scraped the orders, and saw each breaker open that stayed open
    long enough for two scrapes. Waits for one more scrape first."""
    time.sleep(scrape_interval + 1)
    end = run.wall_t0 + run.t_end
    span = f"{max(1, round(run.t_end))}s"
    sel = f'job="{job}"'
    try:
        orders = sum(query(base, f'increase(http_server_requests_total{{{sel},route="/v1/orders"}}[{span}])', end))
    except (OSError, RuntimeError) as e:
        run.check("prometheus", "Prometheus answers", "a valid query", f"{type(e).__name__}: {e}", False)
        return
    sent = len(run.load.results)
    run.check("prometheus", f"Prometheus ({job}) saw the orders", f"≥ 50 % of {sent}", f"{orders:.0f}",
              sent and orders >= 0.5 * sent)
    snaps = run.snapshots()
    for upstream in ("user", "product"):
        open_for = sum(b.t - a.t for a, b in zip(snaps, snaps[1:]) if a.state(upstream) == "open")
        if open_for < 2 * scrape_interval:
            continue
        seen = max(query(base, f'max_over_time(circuit_breaker_state{{{sel},upstream="{upstream}",state="open"}}[{span}])',
                         end) or [0])
        run.check("prometheus", f"Prometheus saw the {upstream} breaker open", "1",
                  f"{seen:g} (open {open_for:.1f} s by /metrics)", seen >= 1)
