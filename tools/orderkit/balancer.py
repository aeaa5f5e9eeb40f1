"""Debian's HAProxy in front of the replicas and Debian's PgBouncer between them and PostgreSQL,
each as a child `Process` with a configuration generated into a work directory.

The HAProxy timings are one `Checks` value, so the rule that ties them to the service's
`SHUTDOWN_DELAY_MS` is written (and unit-tested, tools/orderkit/test_balancer.py) once: a
replica that turns unready must be out of rotation before it closes its listener."""

import os
import socket
import subprocess
import time
from dataclasses import dataclass

from .net import free_port
from .procs import Process


@dataclass(frozen=True)
class Checks:
    """HAProxy's active health checks of `GET /health/ready` (milliseconds). `inter` between
    checks of a healthy server, `fastinter` once one check failed, `downinter` while down; `fall`
    failures take it out of rotation, `rise` successes put it back; a check gets `timeout`."""

    inter: int = 500
    fastinter: int = 200
    downinter: int = 1000
    fall: int = 2
    rise: int = 2
    timeout: int = 500

    def out_of_rotation_ms(self):
        """The longest from a replica turning unready (or dying) to HAProxy taking it out:
        the wait for the next check, then `fall - 1` more at `fastinter`, each at most `timeout`."""
        return self.inter + (self.fall - 1) * self.fastinter + self.fall * self.timeout

    def back_in_rotation_ms(self):
        return self.rise * (self.downinter + self.timeout)

    def shutdown_delay_ms(self):
        """The `SHUTDOWN_DELAY_MS` the replicas need behind these checks: the time out of rotation
        plus a second (a busy machine's timer slack, and requests HAProxy sent just before),
        rounded up to a second."""
        return -(-(self.out_of_rotation_ms() + 1000) // 1000) * 1000

    def check_delay(self, delay_ms):
        """Raises when a replica would stop serving before HAProxy stops sending to it."""
        if delay_ms < self.out_of_rotation_ms():
            raise ValueError(f"SHUTDOWN_DELAY_MS={delay_ms} is shorter than HAProxy needs to take a draining "
                             f"replica out of rotation ({self.out_of_rotation_ms()} ms: inter {self.inter} + "
                             f"(fall {self.fall} - 1) × fastinter {self.fastinter} + fall × timeout {self.timeout})")


# One line per request, parsed by `haproxy_log`: request start (accept date plus handshake and
# idle time), server, status, total active time, retries, termination state.
LOG_FORMAT = "fleet %Ts.%ms %Th %Ti %Ta %b/%s %ST %rc %tsc %HM %HP"


def haproxy_config(*, frontend_port, stats_port, servers, socket_path=None, checks=Checks(), server_timeout_ms=10000,
                   bind_host="127.0.0.1", dns=None):
    """haproxy.cfg for `servers` [(name, "host:port")]. Retries only connection failures
    (the request was never sent, so even a POST is safe to send elsewhere): `retry-on
    conn-failure` with `option redispatch 1` tries another replica; a request that reached a
    replica is never sent twice. `dns` ("host:port" of a resolver, e.g. Docker's 127.0.0.11:53)
    re-resolves server names (a restarted container's address changes)."""
    c = checks
    lines = ["global", "  log stdout format raw local0 info"]
    if socket_path:
        lines.append(f"  stats socket {socket_path} mode 600 level admin")
    lines += ["  maxconn 4096", ""]
    if dns:
        lines += ["resolvers dns", f"  nameserver dns {dns}", "  hold valid 1s", ""]
    server_options = " init-addr last,libc,none resolvers dns" if dns else ""
    lines += [
        "defaults",
        "  mode http",
        "  log global",
        f'  log-format "{LOG_FORMAT}"',
        "  option dontlognull",
        "  timeout connect 1s",          # loopback: a replica that does not accept in 1 s is gone
        "  timeout client 30s",
        f"  timeout server {server_timeout_ms}ms",  # past the order deadline + pool wait
        "  timeout http-request 10s",
        "  timeout http-keep-alive 10s",
        f"  timeout check {c.timeout}ms",
        "  retries 2",
        "  retry-on conn-failure",        # never empty-response / response-timeout: a POST may have landed
        "  option redispatch 1",          # each retry goes to another replica
        "",
        "frontend orders",
        f"  bind {bind_host}:{frontend_port}",
        "  default_backend replicas",
        "",
        "backend replicas",
        "  balance roundrobin",
        "  http-response set-header x-served-by %[srv_name]",  # which replica answered (experiments count it)
        "  option httpchk GET /health/ready",
        "  http-check expect status 200",
        f"  default-server check inter {c.inter}ms fastinter {c.fastinter}ms downinter {c.downinter}ms "
        f"fall {c.fall} rise {c.rise}{server_options}",
    ]
    lines += [f"  server {name} {addr}" for name, addr in servers]
    lines += [
        "",
        "frontend stats",
        f"  bind {bind_host}:{stats_port}",
        "  http-request use-service prometheus-exporter if { path /metrics }",
        "  stats enable",
        "  stats uri /",
        "  stats refresh 2s",
        "",
    ]
    return "\n".join(lines)


class HAProxy(Process):
    """HAProxy on a free loopback port (frontend) plus a stats page (`/`, and `/metrics` in
    Prometheus format) and an admin socket, in front of `servers` [(name, address)]."""

    def __init__(self, workdir, servers, checks=Checks(), log_path=None, server_timeout_ms=10000):
        self.port, self.stats_port = free_port(), free_port()
        self.socket_path = os.path.join(workdir, "haproxy.sock")
        self.config_path = os.path.join(workdir, "haproxy.cfg")
        self.checks, self.servers = checks, list(servers)
        with open(self.config_path, "w") as f:
            f.write(haproxy_config(frontend_port=self.port, stats_port=self.stats_port, servers=self.servers,
                                   socket_path=self.socket_path, checks=checks, server_timeout_ms=server_timeout_ms))
        subprocess.run(["haproxy", "-c", "-q", "-f", self.config_path], check=True)
        super().__init__(["haproxy", "-W", "-db", "-f", self.config_path], log_path=log_path, name="haproxy")

    url = property(lambda self: f"http://127.0.0.1:{self.port}")
    stats_url = property(lambda self: f"http://127.0.0.1:{self.stats_port}/")

    def start(self, seconds=10):
        super().start()
        deadline = time.monotonic() + seconds
        while not os.path.exists(self.socket_path) or not self._accepts():
            if not self.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start: {self.tail()}")
            time.sleep(0.05)
        return self

    def _accepts(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def command(self, line):
        """One command on the admin socket (`show stat`, `show servers state`, …)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(self.socket_path)
            s.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode()

    def servers_stat(self):
        """{server: {"status": "UP"|"DOWN"|…, "scur": sessions now, "stot": sessions so far,
        "eresp": response errors (the server closed or reset before answering), "srv_abrt":
        transfers the server aborted, "econ": failed connections, "wretr": retries,
        "wredis": redispatches}} (HAProxy's `show stat` counters)."""
        text = self.command("show stat")
        rows = [line for line in text.splitlines() if line]
        header = rows[0].lstrip("# ").split(",")
        out = {}
        for line in rows[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "replicas" and row.get("svname") not in ("FRONTEND", "BACKEND"):
                out[row["svname"]] = {"status": row["status"], **{
                    k: int(row.get(k) or 0) for k in ("scur", "stot", "eresp", "srv_abrt", "econ", "wretr", "wredis")}}
        return out

    def wait_status(self, server, status, seconds):
        """Polls until `server` shows `status` (e.g. "UP"); returns the seconds it took."""
        started = time.monotonic()
        while True:
            now = self.servers_stat().get(server, {}).get("status", "")
            if now.startswith(status):
                return time.monotonic() - started
            if time.monotonic() - started > seconds:
                raise RuntimeError(f"haproxy: {server} is {now}, not {status}, after {seconds} s")
            time.sleep(0.05)


@dataclass
class Request:
    """One request as HAProxy logged it (seconds since the epoch; server "-" when none was reached)."""
    start: float
    end: float
    server: str
    status: int
    retries: int
    termination: str
    method: str
    path: str


def haproxy_log(path):
    """The requests in an HAProxy log written with LOG_FORMAT."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            words = line.split()
            if len(words) < 11 or words[0] != "fleet":
                continue
            accept, th, ti, ta = float(words[1]), int(words[2]), int(words[3]), int(words[4])
            start = accept + (max(th, 0) + max(ti, 0)) / 1000
            out.append(Request(start, start + max(ta, 0) / 1000, words[5].split("/", 1)[-1], int(words[6]),
                               int(words[7].lstrip("+")), words[8], words[9], words[10]))
    return out


def pgbouncer_config(*, port, server_host, server_port, pool_mode, pool_size, workdir, max_client_conn=2000,
                     listen_addr="127.0.0.1"):
    """pgbouncer.ini: every database name maps to the same name on `server_host:server_port`
    (`* =`), trust authentication on loopback (as the PostgreSQL it fronts), the admin console
    as database `pgbouncer` for user postgres."""
    return "\n".join([
        "[databases]",
        f"* = host={server_host} port={server_port}",
        "",
        "[pgbouncer]",
        f"listen_addr = {listen_addr}",
        f"listen_port = {port}",
        "unix_socket_dir =",
        "auth_type = trust",
        f"auth_file = {os.path.join(workdir, 'userlist.txt')}",
        "admin_users = postgres",
        "stats_users = postgres",
        f"pool_mode = {pool_mode}",
        f"default_pool_size = {pool_size}",
        "min_pool_size = 0",
        "reserve_pool_size = 0",
        f"max_client_conn = {max_client_conn}",
        # sqlx sets extra_float_digits at connect; PgBouncer 1.18 refuses unknown startup parameters.
        "ignore_startup_parameters = extra_float_digits",
        "server_reset_query = DISCARD ALL",
        "server_check_delay = 10",
        "log_connections = 0",
        "log_disconnections = 0",
        "stats_period = 60",
        "",
    ])


class PgBouncer(Process):
    """PgBouncer on a free loopback port in `pool_mode` with `pool_size` server connections per
    (database, user). Run as the postgres user when started by root (PgBouncer refuses root)."""

    def __init__(self, workdir, *, server="127.0.0.1:5432", pool_mode="transaction", pool_size=20, log_path=None):
        self.port, self.pool_mode, self.pool_size = free_port(), pool_mode, pool_size
        self.dir = os.path.join(workdir, "pgbouncer")
        os.makedirs(self.dir, exist_ok=True)
        host, server_port = server.rsplit(":", 1)
        with open(os.path.join(self.dir, "userlist.txt"), "w") as f:
            f.write('"postgres" ""\n"root" ""\n')
        self.config_path = os.path.join(self.dir, "pgbouncer.ini")
        with open(self.config_path, "w") as f:
            f.write(pgbouncer_config(port=self.port, server_host=host, server_port=server_port, pool_mode=pool_mode,
                                     pool_size=pool_size, workdir=self.dir))
        argv = ["pgbouncer", self.config_path]
        if os.geteuid() == 0:
            for d in (workdir, self.dir):
                os.chmod(d, 0o755)
            for name in os.listdir(self.dir):
                os.chmod(os.path.join(self.dir, name), 0o644)
            argv = ["pgbouncer", "-u", "postgres", self.config_path]
        super().__init__(argv, log_path=log_path, name="pgbouncer")

    def url(self, database, user="postgres"):
        return f"postgres://{user}@127.0.0.1:{self.port}/{database}"

    def start(self, seconds=10):
        super().start()
        deadline = time.monotonic() + seconds
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if not self.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start: {self.tail()}")
                time.sleep(0.05)

    def show(self, what):
        """`SHOW POOLS` / `SHOW SERVERS` / … on the admin console: a list of {column: value}."""
        out = subprocess.run(["psql", "-X", "-A", "-F", "\t", "-P", "footer=off", "-d", self.url("pgbouncer"),
                              "-c", f"SHOW {what}"], capture_output=True, text=True, timeout=10, check=True)
        rows = [line.split("\t") for line in out.stdout.splitlines() if line]
        return [dict(zip(rows[0], r)) for r in rows[1:]]

    def server_connections(self, database):
        """Server connections PgBouncer holds to `database` now (active, idle, used, tested, login)."""
        total = 0
        for pool in self.show("POOLS"):
            if pool.get("database") == database:
                total += sum(int(pool.get(k, 0) or 0) for k in ("sv_active", "sv_idle", "sv_used", "sv_tested",
                                                              "sv_login"))
        return total
