"""Background observers: /metrics every 250 ms (breaker state, attempts, latency buckets, outbox)
and /health/ready (broker state), each sample stamped with seconds since the experiment began."""

import json
import threading
import time
import urllib.request

from orderkit import promtext

KEEP = (
    "circuit_breaker_state", "circuit_breaker_transitions_total", "circuit_breaker_keys_open",
    "upstream_requests_total", "upstream_retries_total", "http_server_request_duration_seconds",
    "http_server_requests_total", "outbox_pending", "outbox_published_total", "orders_created_total",
    "upstream_hedges_total", "upstream_fallbacks_total", "circuit_breaker_mode", "config_reloads_total",
)
ORDER_ROUTE = {"method": "POST", "route": "/v1/orders"}
FAILED_OUTCOMES = ("server_error", "timeout", "connect_error", "invalid_response")
REAL_OUTCOMES = ("success", "not_found") + FAILED_OUTCOMES


class Snapshot:
    """One scrape reduced to what the experiments read."""

    def __init__(self, t, samples):
        self.t = t
        self.samples = samples

    def state(self, upstream):
        for s in ("open", "half_open", "closed"):
            if promtext.total(self.samples, "circuit_breaker_state", upstream=upstream, state=s) >= 1:
                return s
        return "closed"

    def transitions(self, upstream):
        return promtext.total(self.samples, "circuit_breaker_transitions_total", upstream=upstream)

    def attempts(self, upstream, outcomes):
        return promtext.total(self.samples, "upstream_requests_total", upstream=upstream, outcome=outcomes)

    def retries(self, upstream):
        return promtext.total(self.samples, "upstream_retries_total", upstream=upstream)

    def latency_buckets(self):
        return promtext.buckets(self.samples, "http_server_request_duration_seconds", **ORDER_ROUTE)

    def gauge(self, name):
        return promtext.total(self.samples, name)

    def total(self, name, **labels):
        return promtext.total(self.samples, name, **labels)


class MetricsPoller(threading.Thread):
    def __init__(self, base_url, t0, interval=0.25, metrics_base=None):
        super().__init__(daemon=True)
        self.url = (metrics_base or base_url).rstrip("/") + "/metrics"
        self.t0, self.interval = t0, interval
        self.snapshots, self.errors = [], 0
        self.health = []  # (t, broker status, {upstream: state})
        self.health_url = base_url.rstrip("/") + "/health/ready"
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            started = time.monotonic()
            try:
                self.snapshots.append(Snapshot(started - self.t0, promtext.scrape(self.url, KEEP)))
            except OSError:
                self.errors += 1
            try:
                self.health.append((started - self.t0, ready_broker(self.health_url)))
            except (OSError, ValueError):
                pass
            self._halt.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self):
        self._halt.set()
        self.join(5)

    def at(self, t):
        """The last snapshot taken at or before t (the first one if none)."""
        best = self.snapshots[0]
        for s in self.snapshots:
            if s.t <= t:
                best = s
            else:
                break
        return best


def ready_broker(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    return body.get("broker", {}).get("status", "?")
