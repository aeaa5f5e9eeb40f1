"""Tracing's cost: orders/s at 64 connections with traces exported (sampling 1.0 and 0.1) against
the same service with tracing off, each on a fresh stack in this run, the collector a local OTLP
sink that accepts everything (so the figure is the service's own cost, not a collector's).

The three settings run in alternating rounds (off, 1.0, 0.1; five times), and each ratio is the
median of its rounds' ratios: a machine whose speed drifts between runs of a few seconds moved a
single round's ratio by more than tracing costs (docs/tracing.md, ninth session)."""

import statistics
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import wrk
from .scenarios import order_body, orders_url, row


class Sink:
    """An OTLP/HTTP endpoint that reads and accepts every export."""

    def __init__(self):
        sink = self
        self.requests = 0
        self.bytes = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                sink.bytes += len(self.rfile.read(length))
                sink.requests += 1
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def _rate(bench, name, catalogue, env):
    def body(s):
        url, classic = orders_url(s), order_body("classic-box")
        wrk.run(url, bench.d.warmup, 64, threads=2, method="POST", body=classic)
        result = wrk.run(url, bench.d.long, 64, threads=2, method="POST", body=classic)
        return result["statuses"].get(201, 0) / (result["duration_us"] / 1e6), result
    return bench.with_stack(name, catalogue, env, body)


ROUNDS = 5


def _traced_rate(bench, name, catalogue, ratio, sinks):
    """`_rate` exporting to a sink of its own, so no round inherits another's state (with one
    shared sink the traced rounds slowed over a run and the untraced ones did not)."""
    sink = Sink()
    sinks.append(sink)
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_TRACES_SAMPLER": "traceidratio",
               "OTEL_TRACES_SAMPLER_ARG": ratio}
        return _rate(bench, name, catalogue, env)
    finally:
        sink.stop()


def tracing(bench, catalogue):
    sinks, rounds = [], []
    for n in range(ROUNDS):
        rounds.append({"off": _rate(bench, f"tracing-off-{n}", catalogue, {}),
                       **{ratio: _traced_rate(bench, f"tracing-{ratio}-{n}", catalogue, ratio, sinks)
                          for ratio in ("1.0", "0.1")}})
    rows = []
    for ratio, goal in (("1.0", 0.8), ("0.1", 0.9)):
        per_round = [r[ratio][0] / r["off"][0] if r["off"][0] else 0.0 for r in rounds]
        median = statistics.median(per_round)
        rate, off = (statistics.median(r[name][0] for r in rounds) for name in (ratio, "off"))
        rows.append(row(f"tracing: orders/s, sampling {ratio} (median of {ROUNDS} alternating rounds)",
                        f"{rate:.0f} orders/s", f"{off:.0f} orders/s (tracing off, same rounds)", median,
                        f"≥ {goal} × baseline", off > 0 and median >= goal, ratios=[round(x, 3) for x in per_round],
                        rates=[round(r[ratio][0]) for r in rounds], off_rates=[round(r["off"][0]) for r in rounds],
                        runs=[r[ratio][1] for r in rounds], sink_requests=sum(k.requests for k in sinks),
                        sink_bytes=sum(k.bytes for k in sinks)))
    return rows
