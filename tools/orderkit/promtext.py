"""Prometheus text format: parse one scrape, sum samples by label, histogram maths."""

import math
import re
import urllib.request

_LINE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text, keep=None):
    """[(name, {label: value}, float)] for every sample (families in `keep` only, when given)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        name = m.group(1)
        if keep and not any(name.startswith(k) for k in keep):
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        samples.append((name, labels, value))
    return samples


def scrape(url, keep=None, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return parse(r.read().decode(), keep)


def total(samples, name, **want):
    """Sum of `name` over the samples whose labels match `want` (a value may be a tuple of options)."""
    s = 0.0
    for n, labels, v in samples:
        if n != name:
            continue
        if all(labels.get(k) in (w if isinstance(w, tuple) else (w,)) for k, w in want.items()):
            s += v
    return s


def buckets(samples, name, **want):
    """{le: cumulative count} of a histogram (`name` without `_bucket`)."""
    out = {}
    for n, labels, v in samples:
        if n == name + "_bucket" and all(labels.get(k) == w for k, w in want.items()):
            le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            out[le] = out.get(le, 0.0) + v
    return out


def bucket_delta(after, before):
    return {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}


def quantile(cumulative, q):
    """Upper bound of the bucket holding quantile q (None without observations)."""
    if not cumulative:
        return None
    count = cumulative.get(math.inf, max(cumulative.values()))
    if count <= 0:
        return None
    for le in sorted(cumulative):
        if cumulative[le] >= q * count:
            return le
    return math.inf
