"""Tracing's cost: orders/s at 64 connections with traces exported (sampling 1.0 and 0.1) against
the same service with tracing off, each on a fresh stack in this run, the collector a local OTLP
sink that accepts everything (so the figure is the service's own cost, not a collector's)."""

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


def tracing(bench, catalogue):
    sink = Sink()
    try:
        off, off_run = _rate(bench, "tracing-off", catalogue, {})
        traced = {}
        for ratio in ("1.0", "0.1"):
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_TRACES_SAMPLER": "traceidratio",
                   "OTEL_TRACES_SAMPLER_ARG": ratio}
            traced[ratio] = _rate(bench, f"tracing-{ratio}", catalogue, env)
    finally:
        sink.stop()
    rows = []
    for ratio, goal in (("1.0", 0.8), ("0.1", 0.9)):
        rate, run = traced[ratio]
        rows.append(row(f"tracing: orders/s, sampling {ratio}", f"{rate:.0f} orders/s",
                        f"{off:.0f} orders/s (tracing off, same run)", rate / off if off else 0.0,
                        f"≥ {goal} × baseline", off > 0 and rate >= goal * off, run=run, off=off_run,
                        sink_requests=sink.requests, sink_bytes=sink.bytes))
    return rows
