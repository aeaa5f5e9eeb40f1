"""The same Idempotency-Key sent to two replicas at the same moment."""

import threading
import time
import uuid

from orderkit.faulttable import ADA

from .common import Outcome, http, psql

NAME = "idempotency"
TITLE = "one Idempotency-Key, two replicas, at once"
HYPOTHESIS = "each key yields one order and one event, whichever replica each request reached"


def fleet_options(ctx, size):
    return {}


def place(url, key, barrier, answers, slot):
    """POST with the key; a 409 (the other replica still holds the key) is retried after a pause."""
    barrier.wait()
    for attempt in range(50):
        status, doc, _ = http("POST", url + "/v1/orders", {"user_id": ADA, "product_code": "classic-box"},
                              {"idempotency-key": key})
        if status != 409:
            answers[slot] = (status, (doc or {}).get("id"), attempt)
            return
        time.sleep(0.1)
    answers[slot] = (409, None, 50)


def run(ctx, fleet, size):
    out = Outcome()
    r1, r2 = fleet.replica("r1").url, fleet.replica("r2").url
    per_key = {}
    for _ in range(size.keys):
        key = str(uuid.uuid4())
        barrier, answers = threading.Barrier(2), [None, None]
        threads = [threading.Thread(target=place, args=(u, key, barrier, answers, i)) for i, u in enumerate((r1, r2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        per_key[key] = answers
    statuses = sorted({a[0] for answers in per_key.values() for a in answers if a})
    same = sum(1 for a in per_key.values() if a[0] and a[1] and a[0][0] == a[1][0] == 201 and a[0][1] == a[1][1])
    out.check("both replicas answer 201 with the same order for each key", f"{size.keys} of {size.keys} keys",
              f"{same} (statuses seen: {statuses})", same == size.keys)
    ids = {a[0][1] for a in per_key.values() if a[0] and a[0][1]}
    (row,) = psql(fleet.database_url, "SELECT count(*) FROM orders")
    out.check("one order per key in the database", f"{size.keys} orders", f"{row[0]} orders", int(row[0]) == size.keys)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not ids <= ctx.collector.ids:
        time.sleep(0.2)
    time.sleep(1.0)  # a duplicate would arrive right behind the first
    seen = {i: ctx.collector.times_seen.get(i, 0) for i in ids}
    once = sum(1 for n in seen.values() if n == 1)
    out.check("one event per order", f"{len(ids)} orders delivered exactly once",
              f"{once} once, {sum(1 for n in seen.values() if n == 0)} never, "
              f"{sum(1 for n in seen.values() if n > 1)} more than once", ids and once == len(ids))
    out.figure("keys", size.keys)
    out.figure("orders", int(row[0]))
    out.figure("answers_409_then_retried", sum(a[2] for answers in per_key.values() for a in answers if a))
    return out
