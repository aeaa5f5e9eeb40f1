"""Runs one experiment: steady state, fault, recovery, under a bounded load, while /metrics is
polled; then its checks turn what was seen into PASS/FAIL rows."""

import time
from dataclasses import dataclass

from orderkit.load import Load
from orderkit.stats import pct, share, status_mix

from .observe import MetricsPoller

# The service's defaults (README "Configuration"): what a hypothesis assumes of a running stack.
DEFAULTS = {
    "ORDER_DEADLINE_MS": 2000,
    "USER_ATTEMPT_TIMEOUT_MS": 800, "PRODUCT_ATTEMPT_TIMEOUT_MS": 800,
    "USER_MAX_ATTEMPTS": 3, "PRODUCT_MAX_ATTEMPTS": 3,
    "USER_RETRY_BUDGET_PERCENT": 20, "PRODUCT_RETRY_BUDGET_PERCENT": 20,
    "USER_RETRY_BUDGET_MIN_PER_SEC": 5, "PRODUCT_RETRY_BUDGET_MIN_PER_SEC": 5,
    "USER_BREAKER_WINDOW_MS": 10000, "PRODUCT_BREAKER_WINDOW_MS": 10000,
    "USER_BREAKER_OPEN_MS": 5000, "PRODUCT_BREAKER_OPEN_MS": 5000,
    "USER_BREAKER_MIN_CALLS": 20, "PRODUCT_BREAKER_MIN_CALLS": 20,
    "USER_BREAKER_FAILURE_RATE_PERCENT": 80, "PRODUCT_BREAKER_FAILURE_RATE_PERCENT": 80,
    "USER_BREAKER_KEY_MIN_CALLS": 5, "PRODUCT_BREAKER_KEY_MIN_CALLS": 5,
    "OUTBOX_RECONNECT_MAX_MS": 30000,
}


@dataclass
class Check:
    phase: str
    name: str
    expected: str
    observed: str
    ok: bool


class Run:
    """What one experiment saw; checks read it."""

    def __init__(self, exp, cfg, stack, log):
        self.exp, self.cfg, self.stack, self.log = exp, cfg, stack, log
        self.checks = []
        self.notes = {}

    # -- phases -------------------------------------------------------------------------
    def execute(self, scale):
        exp = self.exp
        before, during, after = exp.phases(self.cfg)
        self.t0, self.wall_t0 = time.monotonic(), time.time()
        self.poller = MetricsPoller(self.stack.service_url, self.t0)
        self.poller.start()
        self.load = Load(self.stack.service_url, exp.MIX, exp.RATE * scale, self.t0,
                         timeout=self.cfg["ORDER_DEADLINE_MS"] / 1000 * 3 + 5)
        if hasattr(exp, "setup"):
            exp.setup(self)
        try:
            self.load.start()
            self._sleep(before)
            self.t_inject = self.now()
            exp.inject(self)
            self.t_injected = self.now()  # orders sent while the script ran belong to no phase
            self._sleep(during)
            self.t_restore = self.now()
            exp.restore(self)
            self.t_restored = self.now()
            self._sleep(after)
            if hasattr(exp, "settle"):
                exp.settle(self)
            self.t_load_end = self.now()
            self.load.stop()
            self.t_end = self.now()
            time.sleep(0.6)  # a last scrape after the final answers
        finally:
            self.load.stop()
            self.poller.stop()
            if hasattr(exp, "teardown"):
                exp.teardown(self)
        self.checks = exp.check(self)

    def now(self):
        return time.monotonic() - self.t0

    def _sleep(self, seconds):
        time.sleep(max(0.0, seconds))

    # -- helpers for checks -------------------------------------------------------------
    def results(self, phase, label=None):
        lo, hi = {"before": (1.0, self.t_inject), "during": (self.t_injected, self.t_restore),
                  "after": (self.t_restored, self.t_load_end), "all": (0, self.t_end)}[phase]
        return [r for r in self.load.results if lo <= r.t < hi and (label is None or r.label == label)]

    def check(self, phase, name, expected, observed, ok):
        self.checks.append(Check(phase, name, expected, observed, bool(ok)))

    def snapshots(self):
        return self.poller.snapshots


def steady(run, label=None, floor=0.99, phase="before"):
    """The common steady-state check: orders of `label` succeed."""
    rs = run.results(phase, label)
    ok_share = share(rs, lambda r: r.status == 201)
    what = f"{label} orders" if label else "orders"
    run.check(phase, f"{what} succeed", f"≥ {pct(floor)} 201", f"{pct(ok_share)} of {len(rs)} ({status_mix(rs)})",
              rs and ok_share >= floor)
