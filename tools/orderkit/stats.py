"""Small statistics over client-side results: percentiles, shares, and how they print."""

import math


def percentile(values, q):
    """The nearest-rank q-quantile (0 < q ≤ 1); NaN without values."""
    if not values:
        return math.nan
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def share(results, pred):
    return sum(1 for r in results if pred(r)) / len(results) if results else 0.0


def pct(x):
    return f"{100 * x:.1f} %"


def ms(seconds):
    return "n/a" if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)) else f"{seconds * 1000:.0f} ms"


def status_mix(results):
    """'201×12, 503×3' over results with a `status` (0 = no answer)."""
    mix = {}
    for r in results:
        key = str(r.status) if r.status else "no answer"
        mix[key] = mix.get(key, 0) + 1
    return ", ".join(f"{k}×{v}" for k, v in sorted(mix.items())) or "none"
