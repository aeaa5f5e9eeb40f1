"""Bounded open-loop HTTP load: orders at a fixed rate for a fixed time, only to loopback.

Arrivals follow the clock, not the answers (a slow service does not slow the load down);
at most `max_in_flight` orders wait at once, arrivals beyond that are counted as `dropped`."""

import http.client
import json
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


@dataclass
class Result:
    t: float            # start, seconds since the experiment began
    latency: float      # seconds, client side
    status: int         # 0 = no HTTP answer (connection error, client timeout)
    label: str          # which traffic class (e.g. "victim", "control")
    order_id: str = ""
    problem: str = ""   # the problem type slug of an error answer
    served_by: str = "" # the `x-served-by` header a load balancer added (scripts/fleet's HAProxy does)
    created_at: str = ""  # the order's `created_at`, for a 201


@dataclass
class Load:
    base_url: str
    mix: list                     # [(label, user_id, product_code, weight)]
    rate: float                   # orders per second
    t0: float
    timeout: float = 10.0
    max_in_flight: int = 64
    results: list = field(default_factory=list)
    dropped: int = 0

    def __post_init__(self):
        url = urllib.parse.urlsplit(self.base_url)
        if url.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"refusing to load a non-loopback service: {self.base_url}")
        self.host, self.port = url.hostname, url.port or 80
        self._local = threading.local()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._halt = threading.Event()
        self._thread = None
        self._cycle = [m for m in self.mix for _ in range(m[3])]

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self):
        self._halt.set()
        if self._thread:
            self._thread.join(self.timeout + 5)

    def _run(self):
        period = 1.0 / self.rate
        n = 0
        next_at = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.max_in_flight) as pool:
            while not self._halt.is_set():
                delay = next_at - time.monotonic()
                if delay > 0 and self._halt.wait(delay):
                    break
                label, user, product, _ = self._cycle[n % len(self._cycle)]
                n += 1
                next_at += period
                with self._lock:
                    if self._in_flight >= self.max_in_flight:
                        self.dropped += 1
                        continue
                    self._in_flight += 1
                pool.submit(self._one, label, user, product)

    # A keep-alive connection idle longer than this is replaced, not reused: a balancer closes idle
    # client connections (HAProxy after 10 s here), and a POST on one it just closed fails without
    # having reached anyone — the load generator's artefact, not the service's failure.
    IDLE_REUSE_S = 5.0

    def _conn(self):
        c = getattr(self._local, "conn", None)
        now = time.monotonic()
        if c is not None and now - getattr(self._local, "used", now) > self.IDLE_REUSE_S:
            c.close()
            c = None
        if c is None:
            c = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._local.used = now
        return c

    def _one(self, label, user, product):
        body = json.dumps({"user_id": user, "product_code": product})
        started = time.monotonic()
        status, order_id, problem, served_by, created_at = 0, "", "", "", ""
        try:
            c = self._conn()
            c.request("POST", "/v1/orders", body, {"content-type": "application/json"})
            r = c.getresponse()
            data = r.read()
            status, served_by = r.status, r.getheader("x-served-by", "")
            try:
                doc = json.loads(data or b"{}")
                order_id = doc.get("id", "") if status == 201 else ""
                created_at = doc.get("created_at", "") if status == 201 else ""
                problem = (doc.get("type") or "").rsplit("/", 1)[-1] if status >= 400 else ""
            except ValueError:
                pass
        except (OSError, http.client.HTTPException) as e:
            problem = type(e).__name__
            self._local.conn = None
        finally:
            latency = time.monotonic() - started
            with self._lock:
                self._in_flight -= 1
                self.results.append(Result(started - self.t0, latency, status, label, order_id, problem,
                                           served_by, created_at))
