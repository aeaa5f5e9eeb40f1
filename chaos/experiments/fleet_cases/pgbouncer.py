"""The fleet through PgBouncer in transaction pooling: orders, reads, idempotency, migrations."""

import os
import threading
import time
import uuid

from orderkit import ROOT
from orderkit.faulttable import ADA
from orderkit.load import Load

from .common import MIX, Outcome, describe_failures, events_delivered, failures, http, psql, stored_once

NAME = "pgbouncer"
TITLE = "three replicas through PgBouncer in transaction pooling"
HYPOTHESIS = ("orders are placed, read back, listed and replayed by Idempotency-Key through PgBouncer 1.18 in "
              "transaction mode; the replicas' concurrent start applied each migration once; PgBouncer never "
              "holds more server connections than its pool size")
POOL_SIZE = 8


def fleet_options(ctx, size):
    return {"pgbouncer": "transaction", "pool_size": POOL_SIZE}


def sample(fleet, seen, halt):
    db = fleet.database_name
    while not halt.is_set():
        try:
            seen["server"] = max(seen.get("server", 0), fleet.pgbouncer.server_connections(db))
            (row,) = psql(fleet.database_url, "SELECT count(*) FROM pg_stat_activity "
                                  f"WHERE datname = '{db}' AND pid <> pg_backend_pid()")
            seen["postgres"] = max(seen.get("postgres", 0), int(row[0]))
        except Exception as e:  # a failed sample is reported, not fatal
            seen["error"] = f"{type(e).__name__}: {e}"
        halt.wait(0.2)


def run(ctx, fleet, size):
    out = Outcome()
    migrations = len([f for f in os.listdir(os.path.join(ROOT, "migrations", "postgres")) if f.endswith(".sql")])
    (row,) = psql(fleet.database_url, "SELECT count(*), count(DISTINCT version), bool_and(success) FROM _sqlx_migrations")
    out.check("three replicas starting at once applied each migration once", f"{migrations} rows, all successful",
              f"{row[0]} rows, {row[1]} versions, success {row[2]}",
              int(row[0]) == int(row[1]) == migrations and row[2] == "t")
    seen, halt = {}, threading.Event()
    sampler = threading.Thread(target=sample, args=(fleet, seen, halt), daemon=True)
    sampler.start()
    t0 = time.monotonic()
    load = Load(fleet.url, MIX, size.rate * 2, t0, timeout=10, max_in_flight=128)
    load.start()
    time.sleep(size.warmup + size.after)
    load.stop()
    halt.set()
    sampler.join(5)
    results = load.results
    ok_ids = {r.order_id for r in results if r.status == 201}
    out.check("orders through HAProxy and PgBouncer succeed", "0 failures", describe_failures(results),
              results and not failures(results))
    stored_once(out, fleet.database_url, ok_ids)
    sample_ids = sorted(ok_ids)[:100]
    reads = [http("GET", f"{fleet.url}/v1/orders/{i}") for i in sample_ids]
    good = sum(1 for (st, doc, _), i in zip(reads, sample_ids) if st == 200 and doc and doc.get("id") == i)
    out.check("orders read back through PgBouncer", f"{len(sample_ids)} × 200", f"{good}", sample_ids and good == len(sample_ids))
    st, page, _ = http("GET", f"{fleet.url}/v1/orders?user_id={ADA}&limit=100")
    out.check("a list page through PgBouncer", "200 with 100 items", f"{st}, {len((page or {}).get('items', []))} items",
              st == 200 and len(page["items"]) == min(100, len(ok_ids)))
    key = str(uuid.uuid4())
    body = {"user_id": ADA, "product_code": "classic-box"}
    a = http("POST", fleet.url + "/v1/orders", body, {"idempotency-key": key})
    b = http("POST", fleet.url + "/v1/orders", body, {"idempotency-key": key})
    out.check("an Idempotency-Key replays through PgBouncer", "201 twice, one id",
              f"{a[0]}, {b[0]}", a[0] == b[0] == 201 and a[1]["id"] == b[1]["id"])
    out.check("PgBouncer's server connections stay within its pool", f"≤ {POOL_SIZE} (default_pool_size)",
              f"at most {seen.get('server')}" + (f" ({seen['error']})" if "error" in seen else ""),
              seen.get("server") is not None and seen["server"] <= POOL_SIZE)
    events_delivered(out, ctx.collector, ok_ids | {a[1]["id"]} if a[0] == 201 else ok_ids, 15)
    out.figure("orders", len(ok_ids))
    out.figure("orders_per_s", round(len(results) / (size.warmup + size.after), 1))
    out.figure("pgbouncer_server_connections_max", seen.get("server"))
    out.figure("postgres_backends_on_the_database_max", seen.get("postgres"))
    out.figure("replica_pool_size", int(fleet.replica("r1").config()["DATABASE_MAX_CONNECTIONS"]))
    return out
