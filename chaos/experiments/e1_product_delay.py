"""Experiment 1: product-service answers one product 60 s late."""

from harness.core import steady
from orderkit.faulttable import ADA
from orderkit.stats import ms, pct, percentile, share, status_mix

NAME = "product-delay"
TITLE = "product-service: one product 60 s late"
VICTIM, CONTROL = "classic-box", "picnic-box"
HYPOTHESIS = (
    f"With {VICTIM} delayed by 60 s (chaos/delay product 60s --key {VICTIM}), its orders fail at the "
    "order deadline (504, or a fast 503 once its per-key breaker opens) and their p99 stays within "
    f"deadline + 10 %; orders of another product ({CONTROL}) are unaffected: they still succeed, their "
    "p99 within 100 ms of the steady state, and the product-wide breaker stays closed. After chaos/reset "
    f"{VICTIM} succeeds again within the breaker's open wait + one attempt."
)
# Short timings for the self-started stack (a running stack is assumed to use the defaults). The
# attempt timeout stays at its default 800 ms, so the 1 s deadline, not the attempts, ends the wait.
# Stale-if-error off: this is about failing fast; with it, the victim's earlier answers would
# place its orders (e8 is about that).
ENV = {"ORDER_DEADLINE_MS": "1000",
       "PRODUCT_BREAKER_OPEN_MS": "2000", "PRODUCT_BREAKER_WINDOW_MS": "3000",
       "PRODUCT_STALE_IF_ERROR_MS": "0"}
MIX = [(VICTIM, ADA, VICTIM, 1), (CONTROL, ADA, CONTROL, 1)]
RATE = 20
# The control product is served by the self-started simulator only (the fault table has one healthy product).
SELF_STARTED_ONLY = True


def phases(cfg):
    return 4, 8, cfg["PRODUCT_BREAKER_OPEN_MS"] / 1000 + 3


def inject(run):
    run.stack.chaos("delay", "product", "60s", "--key", VICTIM)


def restore(run):
    run.stack.chaos("reset")


def check(run):
    deadline = run.cfg["ORDER_DEADLINE_MS"] / 1000
    steady(run, VICTIM)
    steady(run, CONTROL)
    base = percentile([r.latency for r in run.results("before", CONTROL)], 0.99)

    victim = run.results("during", VICTIM)
    failed_fast = share(victim, lambda r: r.status in (503, 504))
    run.check("during", f"{VICTIM} orders fail (504 deadline / 503 circuit)", "≥ 99 % 504 or 503",
              f"{pct(failed_fast)} of {len(victim)} ({status_mix(victim)})", victim and failed_fast >= 0.99)
    p99 = percentile([r.latency for r in victim], 0.99)
    run.check("during", f"{VICTIM} p99 latency (client)", f"≤ {ms(deadline * 1.1)} (deadline + 10 %)",
              ms(p99), victim and p99 <= deadline * 1.1)

    control = run.results("during", CONTROL)
    ok = share(control, lambda r: r.status == 201)
    run.check("during", f"{CONTROL} orders unaffected", "≥ 99.0 % 201", f"{pct(ok)} of {len(control)} ({status_mix(control)})",
              control and ok >= 0.99)
    cp99 = percentile([r.latency for r in control], 0.99)
    run.check("during", f"{CONTROL} p99 latency (client)", f"≤ {ms(base + 0.1)} (steady {ms(base)} + 100 ms)",
              ms(cp99), control and cp99 <= base + 0.1)
    during = [s for s in run.snapshots() if run.t_inject <= s.t <= run.t_restore]
    states = sorted({s.state("product") for s in during})
    run.check("during", "product-wide breaker", "closed throughout", "/".join(states) or "no scrape",
              states == ["closed"])

    limit = run.cfg["PRODUCT_BREAKER_OPEN_MS"] / 1000 + run.cfg["PRODUCT_ATTEMPT_TIMEOUT_MS"] / 1000 + 0.5
    back = [r for r in run.results("after", VICTIM) if r.status == 201]
    took = (min(r.t for r in back) - run.t_restore) if back else None
    run.check("after", f"{VICTIM} succeeds again after chaos/reset", f"within {ms(limit)} (open wait + attempt + 0.5 s)",
              ms(took) if back else "never", back and took <= limit)
    return run.checks
