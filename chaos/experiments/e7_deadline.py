"""Experiment 7: one product 60 s late — does the upstream stop working when the service stops waiting?"""

from harness.core import steady
from orderkit.faulttable import ADA
from orderkit.net import read_json
from orderkit.stats import pct, share, status_mix

NAME = "deadline-propagation"
TITLE = "product-service: one product 60 s late, the upstream told when to give up"
VICTIM, CONTROL = "classic-box", "picnic-box"
HYPOTHESIS = (
    f"With {VICTIM} 60 s late (chaos/delay product 60s --key {VICTIM}), every attempt tells product-service "
    "how long the service will still wait (x-envoy-expected-rq-timeout-ms), so the upstream abandons every "
    "late attempt once that time has passed: the simulator's abandoned count covers every call the fault "
    "slowed, each saving ≥ 60 s − the attempt timeout of work, and 1 s after the fault no upstream work "
    f"is left (without the header, each would go on for a minute); {CONTROL} orders keep succeeding."
)
# Stale-if-error off: the victim's orders must fail at the deadline for its attempts to be cut.
ENV = {"ORDER_DEADLINE_MS": "1000", "PRODUCT_BREAKER_OPEN_MS": "2000", "PRODUCT_STALE_IF_ERROR_MS": "0"}
MIX = [(VICTIM, ADA, VICTIM, 1), (CONTROL, ADA, CONTROL, 1)]
RATE = 10
SELF_STARTED_ONLY = True  # the control product is the self-started simulator's


def phases(cfg):
    return 2, 4, 2


def sim_stats(run):
    return read_json(run.stack.sim_admin_url + "/__admin/stats")


def inject(run):
    run.stack.chaos("delay", "product", "60s", "--key", VICTIM)
    # After the fault is in force: every victim call counted from here on is slowed.
    run.notes["sim_before"] = sim_stats(run)


def restore(run):
    run.notes["sim_during"] = sim_stats(run)
    run.stack.chaos("reset")


def teardown(run):
    # After the load has stopped: whatever work is left has no caller waiting for it.
    run.notes["sim_after"] = sim_stats(run)


def check(run):
    before, during, after = (run.notes[k]["products"] for k in ("sim_before", "sim_during", "sim_after"))
    steady(run, CONTROL)
    slowed = during["by_key"].get(VICTIM, 0) - before["by_key"].get(VICTIM, 0)
    abandoned = after["abandoned"] - before["abandoned"]
    run.check("during", "the upstream abandoned every slowed call", f"≥ {slowed} (the {VICTIM} calls during the fault)",
              f"{abandoned} abandoned", slowed >= 1 and abandoned >= slowed)
    saved = (after["work_saved_ms"] - before["work_saved_ms"]) / 1000
    least = 60 - run.cfg["PRODUCT_ATTEMPT_TIMEOUT_MS"] / 1000
    run.check("during", "work saved per abandoned call", f"≥ {least:.1f} s (60 s − attempt timeout)",
              f"{saved / max(1, abandoned):.1f} s ({saved:.0f} s in all)", abandoned and saved >= least * abandoned)
    working = run.notes["sim_after"]["working"]
    run.check("after", "no upstream work outlives the service's wait", "0 requests still worked on",
              f"{working}", working == 0)
    control = run.results("during", CONTROL)
    ok = share(control, lambda r: r.status == 201)
    run.check("during", f"{CONTROL} orders unaffected", "≥ 99.0 % 201", f"{pct(ok)} of {len(control)} ({status_mix(control)})",
              control and ok >= 0.99)
    return run.checks
