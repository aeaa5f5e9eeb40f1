"""What every fleet experiment shares: its size (CI's short form or the full one), checks, the
database and broker read back, and waiting for events."""

import json
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from orderkit.faulttable import ADA
from orderkit.stats import status_mix


@dataclass
class Size:
    """How long and how hard: `ci` is the short form CI runs, `full` the one people run."""
    warmup: float     # seconds of load before the fault
    after: float      # seconds of load after it
    rate: float       # orders per second through HAProxy
    keys: int         # Idempotency-Keys raced across two replicas
    lag_rate: float   # orders per second on the replica without a relay
    lag_seconds: float


CI = Size(warmup=2, after=3, rate=30, keys=10, lag_rate=50, lag_seconds=3)  # debug build: 200/s is the full form's
FULL = Size(warmup=5, after=8, rate=60, keys=50, lag_rate=200, lag_seconds=10)


@dataclass
class Check:
    name: str
    expected: str
    observed: str
    ok: bool


@dataclass
class Outcome:
    checks: list = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    def check(self, name, expected, observed, ok):
        self.checks.append(Check(name, expected, str(observed), bool(ok)))

    def figure(self, name, value):
        self.figures[name] = value


MIX = [("order", ADA, "classic-box", 1)]


def psql(url, sql):
    """Rows of `sql` (tab-separated fields) through psql; the SQL goes on stdin (long id lists)."""
    out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", "-"],
                         input=sql, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def uuid_array(ids):
    return "'{" + ",".join(sorted(ids)) + "}'::uuid[]"


def stored_once(outcome, database_url, ids, what="every order that got a 201"):
    """Each id is one row of `orders` (ids came back distinct, and each is there)."""
    if not ids:
        outcome.check(f"{what} is stored exactly once", "= 201s", "no 201 at all", False)
        return
    (row,) = psql(database_url, f"SELECT count(*), count(DISTINCT id) FROM orders WHERE id = ANY({uuid_array(ids)})")
    found = int(row[0])
    outcome.check(f"{what} is stored exactly once", f"{len(ids)} rows for {len(ids)} ids",
                  f"{found} rows", found == len(ids))


def wait_events(collector, ids, seconds):
    """Waits until every id was delivered (or `seconds` pass); returns the missing ones."""
    deadline = time.monotonic() + seconds
    while True:
        missing = set(ids) - collector.ids
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.2)


def events_delivered(outcome, collector, ids, seconds, what="every 201's event is delivered"):
    missing = wait_events(collector, ids, seconds)
    outcome.check(what, f"{len(ids)} of {len(ids)} on a queue bound to orders/created_order",
                  f"{len(ids) - len(missing)} (missing {len(missing)})", ids and not missing)
    return missing


def failures(results):
    return [r for r in results if r.status != 201]


def describe_failures(results):
    bad = failures(results)
    return f"{len(bad)} of {len(results)} ({status_mix(bad) if bad else 'none'})"


def http(method, url, body=None, headers=None, timeout=10):
    """(status, parsed JSON or None, headers) without raising on 4xx/5xx."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null"), dict(r.headers)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            doc = json.loads(raw or b"null")
        except ValueError:
            doc = None
        return e.code, doc, dict(e.headers)


def percentile_ms(values, q):
    from orderkit.stats import percentile
    return round(percentile(values, q) * 1000, 1) if values else None
