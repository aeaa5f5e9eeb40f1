"""The outputs: a table on stdout, report.json, and one PNG per experiment (latency over time,
status mix per second, breaker state over time; the fault window shaded)."""

import json
import math
import os
from dataclasses import asdict

from orderkit import promtext

STATE_Y = {"closed": 0, "half_open": 1, "open": 2}


def table(rows):
    """rows: [(experiment, phase, check, expected, observed, PASS/FAIL)] → aligned text."""
    head = ("experiment", "phase", "check", "expected", "observed", "result")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: " | ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *map(line, rows)])


def markdown(rows):
    head = "| experiment | phase | check | expected | observed | result |\n|---|---|---|---|---|---|\n"
    return head + "".join("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |\n" for r in rows)


def run_json(run, error=None):
    if error or not hasattr(run, "t_end"):
        return {"name": run.exp.NAME, "error": error, "checks": [asdict(c) for c in run.checks]}
    snaps = run.snapshots()
    return {
        "name": run.exp.NAME, "title": run.exp.TITLE, "hypothesis": run.exp.HYPOTHESIS,
        "assumed_config": run.cfg, "rate_per_s": run.load.rate, "mix": [m[:3] for m in run.exp.MIX],
        "fault": {"injected_at_s": round(run.t_inject, 3), "restored_at_s": round(run.t_restore, 3)},
        "end_s": round(run.t_end, 3), "dropped_arrivals": run.load.dropped, "scrape_errors": run.poller.errors,
        "passed": all(c.ok for c in run.checks),
        "checks": [asdict(c) for c in run.checks],
        "requests": [[round(r.t, 3), round(r.latency * 1000, 2), r.status, r.label, r.problem] for r in run.load.results],
        "breaker_state": [[round(s.t, 3), s.state("user"), s.state("product")] for s in snaps],
        "outbox_pending": [[round(s.t, 3), s.gauge("outbox_pending")] for s in snaps],
    }


def write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def chart(run, path):
    """One PNG, three panels sharing the time axis. Returns None, or why no chart was drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -r chaos/experiments/requirements.txt)"
    results, snaps = run.load.results, run.snapshots()
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True,
                                        gridspec_kw={"height_ratios": [3, 2, 1.4]})
    ok = all(c.ok for c in run.checks)
    fig.suptitle(f"{run.exp.NAME}: {run.exp.TITLE} — {'PASS' if ok else 'FAIL'}", fontsize=13,
                 color="black" if ok else "firebrick")
    for ax in (ax1, ax2, ax3):
        ax.axvspan(run.t_inject, run.t_restore, color="tomato", alpha=0.12, lw=0)
        ax.grid(alpha=0.3)
    ax1.text(run.t_inject, 1.02, " fault", transform=ax1.get_xaxis_transform(), color="firebrick", fontsize=9)

    colours = {"2xx": "tab:green", "4xx": "tab:blue", "502": "tab:purple", "503": "tab:orange",
               "504": "tab:red", "other": "tab:gray"}

    def cls(status):
        if 200 <= status < 300:
            return "2xx"
        if 400 <= status < 500:
            return "4xx"
        return str(status) if status in (502, 503, 504) else "other"

    labels = sorted({r.label for r in results})
    markers = dict(zip(labels, "o^sD"))
    for c, colour in colours.items():
        for label in labels:
            pts = [(r.t, r.latency * 1000) for r in results if cls(r.status) == c and r.label == label]
            if pts:
                ax1.scatter(*zip(*pts), s=9, color=colour, marker=markers[label], alpha=0.7,
                            label=f"{c} {label}" if len(labels) > 1 else c)
    deadline = run.cfg["ORDER_DEADLINE_MS"]
    ax1.axhline(deadline, color="firebrick", ls="--", lw=1)
    ax1.text(0.005, deadline * 0.93, f"deadline {deadline} ms", va="top", color="firebrick", fontsize=8,
             transform=ax1.get_yaxis_transform())
    ax1.set_yscale("log")
    ax1.set_ylim(0.3, max([deadline * 1.6] + [r.latency * 1600 for r in results]))
    ax1.set_ylabel("latency (ms, client, log)")
    ax1.legend(loc="lower right", fontsize=8, ncol=3, markerscale=2, framealpha=0.9)

    end = int(math.ceil(run.t_end))
    seconds = list(range(end))
    bottom = [0] * end
    for c, colour in colours.items():
        counts = [0] * end
        for r in results:
            if cls(r.status) == c and int(r.t) < end:
                counts[int(r.t)] += 1
        if any(counts):
            ax2.bar([s + 0.5 for s in seconds], counts, width=0.9, bottom=bottom, color=colour, label=c)
            bottom = [b + n for b, n in zip(bottom, counts)]
    ax2.set_ylabel("answers / s")
    ax2.legend(loc="upper left", fontsize=8, ncol=6)

    for upstream, colour in (("product", "tab:red"), ("user", "tab:blue")):
        xs = [s.t for s in snaps]
        ys = [STATE_Y[s.state(upstream)] + (0.04 if upstream == "user" else 0) for s in snaps]
        ax3.step(xs, ys, where="post", color=colour, label=f"{upstream} breaker", lw=2)
    ax3.set_yticks([0, 1, 2], ["closed", "half-open", "open"])
    ax3.set_ylim(-0.4, 2.5)
    ax3.set_xlabel("seconds since the experiment began")
    ax4 = ax3.twinx()
    if getattr(run.exp, "BROKER", False):
        ax4.plot([s.t for s in snaps], [s.gauge("outbox_pending") for s in snaps], color="tab:purple",
                 lw=1.5, label="outbox_pending")
        ax4.set_ylabel("outbox pending", color="tab:purple")
    else:
        for upstream, colour in (("product", "tab:red"), ("user", "tab:blue")):
            ax4.step([s.t for s in snaps], [promtext.total(s.samples, "circuit_breaker_keys_open", upstream=upstream)
                                            for s in snaps], where="post", color=colour, ls=":", lw=1.5,
                     label=f"{upstream} keys open")
        ax4.set_ylabel("per-key breakers open")
        top = max([promtext.total(s.samples, "circuit_breaker_keys_open") for s in snaps] + [1])
        ax4.set_ylim(-0.2 * top, top * 1.25)
        ax4.yaxis.get_major_locator().set_params(integer=True)
    ax4.legend(loc="upper right", fontsize=8)
    ax3.legend(loc="upper left", fontsize=8, ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
