"""The capacity model's figures (docs/fleet.md#capacity-model), all in one run: the database's
commit ceiling (pgbench, the order's statement), one replica alone (orders/s, the cores it used,
its RSS, its PostgreSQL connections), and three replicas behind HAProxy with and without PgBouncer
(orders/s, PostgreSQL server connections). Upstreams answer at once (zero-delay catalogue), so the
figures are the service's and the database's, not the simulator's delays."""

import os
import subprocess
import threading
import time

from orderkit.database import Database
from orderkit.fleet import Fleet

from . import wrk
from .scenarios import cpu_by_command, cpu_share, order_body, pgbench, row, rss_kib

CONNECTIONS = 64


def backends(database_url, database):
    out = subprocess.run(["psql", "-X", "-A", "-t", "-d", database_url, "-c",
                          f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' "
                          "AND pid <> pg_backend_pid()"], capture_output=True, text=True, timeout=10)
    return int(out.stdout.strip() or 0)


class Sampler(threading.Thread):
    """The most PostgreSQL backends on the fleet's database (and PgBouncer server connections) seen."""

    def __init__(self, fleet):
        super().__init__(daemon=True)
        self.fleet, self.halt = fleet, threading.Event()
        self.postgres = self.pgbouncer = 0

    def run(self):
        while not self.halt.is_set():
            self.postgres = max(self.postgres, backends(self.fleet.database_url, self.fleet.database_name))
            if self.fleet.pgbouncer:
                self.pgbouncer = max(self.pgbouncer, self.fleet.pgbouncer.server_connections(self.fleet.database_name))
            self.halt.wait(0.25)

    def stop(self):
        self.halt.set()
        self.join(5)


def drive(fleet, url, d):
    """Warm up, then `d.long` seconds of 64 connections placing orders: the wrk figures, cores per
    command, peak RSS of each replica, PostgreSQL connections."""
    body = order_body("classic-box")
    wrk.run(url + "/v1/orders", d.warmup, CONNECTIONS, threads=2, method="POST", body=body)
    sampler = Sampler(fleet)
    sampler.start()
    before, started = cpu_by_command(), time.monotonic()
    result = wrk.run(url + "/v1/orders", d.long, CONNECTIONS, threads=2, method="POST", body=body)
    cores = cpu_share(before, cpu_by_command(), time.monotonic() - started)
    sampler.stop()
    rate = result["statuses"].get(201, 0) / (result["duration_us"] / 1e6)
    rss = {n: round(rss_kib(r.pid, "VmHWM") / 1024, 1) for n, r in fleet.replicas.items()}
    return {"rate": rate, "wrk": result, "cores": cores, "rss_peak_mib": rss,
            "postgres_connections": sampler.postgres, "pgbouncer_server_connections": sampler.pgbouncer}


def capacity(args, d, workdir, catalogue, migrate):
    """Rows for the report; `migrate(url)` applies the migrations to a database for pgbench."""
    with Database(args.database_url, prefix="bench") as db:
        migrate(db.url)
        pg_tps = pgbench(db.url, d)
    runs = {}
    shapes = [("one replica, direct", 1, None), ("3 replicas via HAProxy, direct", 3, None),
              ("3 replicas via HAProxy and PgBouncer (transaction, pool 20)", 3, "transaction")]
    for label, n, pool in shapes:
        fleet = Fleet(args.bin_dir, os.path.join(workdir, f"fleet-{n}-{pool}"), replicas=n,
                      admin_url=args.database_url, amqp_url=args.amqp_url, pgbouncer=pool, pool_size=20,
                      catalogue=catalogue, env={"RUST_LOG": "warn"})
        with fleet:
            url = fleet.replica("r1").url if n == 1 else fleet.url
            runs[label] = drive(fleet, url, d)
            runs[label]["replica_pool"] = int(fleet.replica("r1").config()["DATABASE_MAX_CONNECTIONS"])
    one = runs["one replica, direct"]
    service_cores = one["cores"].get("order-service", 0.0) or float("nan")
    per_core = one["rate"] / service_cores
    rows = [
        row("fleet: one replica, orders/s per replica-core", f"{per_core:.0f} orders/s per core",
            f"{pg_tps:.0f} tx/s (pgbench ceiling, same statement, 64 clients)", per_core / pg_tps,
            "(informative: the capacity model)", None, orders_per_s=round(one["rate"]), cores=one["cores"],
            rss_peak_mib=one["rss_peak_mib"], postgres_connections=one["postgres_connections"]),
    ]
    for label, r in runs.items():
        rows.append(row(f"fleet: {label}, orders/s at {CONNECTIONS} connections", f"{r['rate']:.0f} orders/s",
                        f"{pg_tps:.0f} tx/s (pgbench ceiling)", r["rate"] / pg_tps, "(informative)", None,
                        postgres_connections=r["postgres_connections"],
                        pgbouncer_server_connections=r["pgbouncer_server_connections"], cores=r["cores"],
                        rss_peak_mib=r["rss_peak_mib"], replica_pool=r["replica_pool"],
                        p99_ms=round(r["wrk"]["p99_us"] / 1000, 1), non_201=r["wrk"]["requests"] - r["wrk"]["statuses"].get(201, 0)))
    bounced = runs["3 replicas via HAProxy and PgBouncer (transaction, pool 20)"]
    rows.append(row("fleet: PostgreSQL server connections at 3 replicas through PgBouncer",
                    f"{bounced['pgbouncer_server_connections']} (PgBouncer's pool)", "20 (pool size)",
                    bounced["pgbouncer_server_connections"] / 20, "≤ pool size",
                    bounced["pgbouncer_server_connections"] <= 20,
                    postgres_backends=bounced["postgres_connections"],
                    direct=runs["3 replicas via HAProxy, direct"]["postgres_connections"]))
    return rows
