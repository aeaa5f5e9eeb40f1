"""Runs one experiment: steady state, fault, recovery, under a bounded load, while /metrics is
polled; then its checks turn what was seen into PASS/FAIL rows."""

import time
from dataclasses import dataclass

from orderkit.load import Load
from orderkit.stats import pct, share, status_mix

from .observe import MetricsPoller

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
        self.poller = MetricsPoller(self.stack.service_url, self.t0, metrics_base=self.stack.metrics_url)
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
        # The steady state is what was answered before the fault: an order still in flight when
        # it is injected meets the fault (an outage cuts connections at once), so it belongs to
        # no phase.
        done_by = self.t_inject if phase == "before" else float("inf")
        return [r for r in self.load.results
                if lo <= r.t < hi and r.t + r.latency < done_by and (label is None or r.label == label)]

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
