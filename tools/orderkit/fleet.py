"""A fleet on loopback: N order-service replicas sharing one PostgreSQL database (through
PgBouncer) and RabbitMQ, HAProxy in front, and the upstream simulator: what `scripts/fleet`
starts and what chaos/experiments/fleet breaks."""

import os
import signal

from .balancer import Checks, HAProxy, PgBouncer
from .database import Database
from .procs import Service, Simulator


class Fleet:
    """`with Fleet(bin_dir, workdir, admin_url=…) as f:` starts everything; `f.url` is HAProxy.

    - `admin_url`: a fresh database is created through it (and dropped after); or `database_url`
      names an existing one.
    - `pgbouncer`: None = replicas connect to PostgreSQL directly; else the pool mode
      ("transaction" or "session"). In transaction mode the replicas run with
      `DATABASE_STATEMENT_CACHE_CAPACITY=0` (PgBouncer 1.18 cannot keep prepared statements
      across transactions) and `DATABASE_SESSION_URL` pointing at PostgreSQL itself (the
      migrations' advisory lock and the relay's LISTEN need a session of their own).
    - `env` applies to every replica, `replica_env` {name: env} to one (None unsets a variable,
      e.g. {"r1": {"AMQP_URL": None}} runs r1 without a relay).
    - The replicas start at once (their migrations race, as pods do), each waited for.
    """

    def __init__(self, bin_dir, workdir, *, replicas=3, admin_url=None, database_url=None, amqp_url=None,
                 pgbouncer="transaction", pool_size=20, env=None, replica_env=None, catalogue=None,
                 checks=Checks(), log=lambda msg: None, postgres="127.0.0.1:5432"):
        if (admin_url is None) == (database_url is None):
            raise ValueError("give admin_url (a fresh database) or database_url (an existing one)")
        self.bin_dir, self.workdir, self.n, self.log = bin_dir, workdir, replicas, log
        self.admin_url, self.database_url, self.amqp_url = admin_url, database_url, amqp_url
        self.pool_mode, self.pool_size, self.checks = pgbouncer, pool_size, checks
        self.env, self.replica_env, self.catalogue, self.postgres = dict(env or {}), dict(replica_env or {}), catalogue, postgres
        self.db = self.simulator = self.pgbouncer = self.haproxy = None
        self.replicas = {}

    def _path(self, name):
        return os.path.join(self.workdir, f"{name}.log")

    @property
    def database_name(self):
        return self.database_url.rsplit("/", 1)[1].split("?")[0]

    def start(self):
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self):
        os.makedirs(self.workdir, exist_ok=True)
        if self.admin_url:
            self.db = Database(self.admin_url, prefix="fleet").create()
            self.database_url = self.db.url
        self.simulator = Simulator(self.bin_dir, catalogue=self.catalogue, env={"RUST_LOG": "warn"},
                                   log_path=self._path("upstream-sim")).start()
        service_url = self.database_url
        common = {"DATABASE_SESSION_URL": self.database_url, **self.env}
        if self.pool_mode:
            self.pgbouncer = PgBouncer(self.workdir, server=self.postgres, pool_mode=self.pool_mode,
                                       pool_size=self.pool_size, log_path=self._path("pgbouncer")).start()
            service_url = self.pgbouncer.url(self.database_name)
            if self.pool_mode == "transaction":
                common.setdefault("DATABASE_STATEMENT_CACHE_CAPACITY", "0")
        delay = int(common.setdefault("SHUTDOWN_DELAY_MS", str(self.checks.shutdown_delay_ms())))
        self.checks.check_delay(delay)
        for i in range(1, self.n + 1):
            name = f"r{i}"
            self.replicas[name] = Service(self.bin_dir, users_url=self.simulator.users_url,
                                          products_url=self.simulator.products_url, database_url=service_url,
                                          amqp_url=self.amqp_url, env={**common, **self.replica_env.get(name, {})},
                                          log_path=self._path(name), name=name)
        for r in self.replicas.values():  # at once: their migrations race, as pods' do
            r.start(wait=False)
        for r in self.replicas.values():
            r.wait_ready(60)
        self.haproxy = HAProxy(self.workdir, [(n, r.addr) for n, r in self.replicas.items()], self.checks,
                               log_path=self._path("haproxy")).start()
        for name in self.replicas:
            self.haproxy.wait_status(name, "UP", 15)
        self.log(f"fleet up: {self.n} replicas behind haproxy {self.url}"
                 + (f", pgbouncer ({self.pool_mode}) 127.0.0.1:{self.pgbouncer.port}" if self.pgbouncer else ""))

    url = property(lambda self: self.haproxy.url)

    def replica(self, name):
        return self.replicas[name]

    def kill(self, name):
        """SIGKILL: no drain, no relay shutdown, connections reset."""
        r = self.replicas[name]
        r.proc.send_signal(signal.SIGKILL)
        r.proc.wait()

    def restart(self, name, seconds=60):
        """Starts a stopped replica again on its own address, appending to its log."""
        return self.replicas[name].start(seconds)

    def describe(self):
        d = {"haproxy": self.url, "haproxy_stats": self.haproxy.stats_url,
             "haproxy_metrics": self.haproxy.stats_url + "metrics", "haproxy_socket": self.haproxy.socket_path,
             "replicas": {n: r.url for n, r in self.replicas.items()},
             "pgbouncer": f"127.0.0.1:{self.pgbouncer.port} ({self.pool_mode} pooling, pool size {self.pool_size}; "
                          f"admin console: psql {self.pgbouncer.url('pgbouncer')})" if self.pgbouncer else None,
             "database": self.database_url, "broker": self.amqp_url, "sim_admin": self.simulator.admin_url,
             "users": self.simulator.users_url, "products": self.simulator.products_url, "logs": self.workdir}
        return d

    def stop(self):
        """HAProxy first (no new requests), the replicas together (they drain at once), then the
        rest. Safe to call twice."""
        if self.haproxy:
            self.haproxy.stop(5)
        for r in self.replicas.values():
            if r.alive():
                r.proc.terminate()
        for r in self.replicas.values():
            r.stop(30)
        for p in (self.pgbouncer, self.simulator):
            if p is not None:
                p.stop(5)
        if self.db:
            self.db.drop()
            self.db = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
