"""What an experiment runs against: processes the runner starts on free loopback ports (the
simulator, the service on a fresh PostgreSQL database, a cut-able broker proxy) or a stack that
already runs. Faults go through the chaos/ scripts, the same ones people use."""

import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid

from .proxy import TcpProxy

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CHAOS = os.path.join(ROOT, "chaos")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, seconds):
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {seconds} s")
            time.sleep(0.1)


class Chaos:
    """Runs chaos/<script> against the simulators' admin URLs, logging what it printed."""

    def __init__(self, user_sim, product_sim, log):
        self.env = dict(os.environ, USER_SIM_URL=user_sim, PRODUCT_SIM_URL=product_sim)
        self.log = log

    def __call__(self, *args):
        r = subprocess.run([os.path.join(CHAOS, args[0]), *args[1:]], env=self.env,
                           capture_output=True, text=True, timeout=15)
        self.log(f"$ chaos/{' '.join(args)}\n{r.stdout}{r.stderr}".rstrip())
        if r.returncode != 0:
            raise RuntimeError(f"chaos/{args[0]} failed: {r.stderr.strip()}")


class Database:
    """A PostgreSQL database of the runner's own, dropped at the end."""

    def __init__(self, admin_url):
        self.admin_url = admin_url.rstrip("/")
        self.name = f"chaos_{uuid.uuid4().hex[:12]}"
        base = self.admin_url.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"

    def __enter__(self):
        subprocess.run(["psql", "-q", "-d", self.admin_url, "-c", f'CREATE DATABASE "{self.name}"'], check=True)
        return self

    def __exit__(self, *exc):
        subprocess.run(["psql", "-q", "-d", self.admin_url, "-c", f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'],
                       check=False)


class LocalStack:
    """upstream-sim + order-service started by the runner, per experiment, on free ports."""

    def __init__(self, bin_dir, workdir, database_url, amqp_url, catalogue, env, extra_env):
        self.bin_dir, self.workdir = bin_dir, workdir
        self.database_url, self.amqp_url, self.catalogue = database_url, amqp_url, catalogue
        self.env, self.extra_env = env, extra_env
        self.procs, self.proxy = [], None

    def start(self, name, log, broker_proxy=False, self_started_only=False):
        ports = {k: free_port() for k in ("users", "products", "admin", "api")}
        sim_env = dict(os.environ, SIM_USERS_ADDR=f"127.0.0.1:{ports['users']}",
                       SIM_PRODUCTS_ADDR=f"127.0.0.1:{ports['products']}",
                       SIM_ADMIN_ADDR=f"127.0.0.1:{ports['admin']}", SIM_CATALOGUE=self.catalogue,
                       RUST_LOG="warn")
        self._spawn("upstream-sim", sim_env, f"{name}.upstream-sim.log")
        amqp = self.amqp_url
        if broker_proxy and amqp:
            host_port = amqp.split("@")[-1].split("/")[0]
            host, port = host_port.rsplit(":", 1)
            self.proxy = TcpProxy(host, int(port))
            self.proxy.start()
            amqp = amqp.replace(host_port, f"127.0.0.1:{self.proxy.port}")
        svc_env = dict(os.environ, HTTP_ADDR=f"127.0.0.1:{ports['api']}", DATABASE_URL=self.database_url,
                       USER_SERVICE_URL=f"http://127.0.0.1:{ports['users']}",
                       PRODUCT_SERVICE_URL=f"http://127.0.0.1:{ports['products']}", RUST_LOG="info")
        svc_env.pop("AMQP_URL", None)
        if amqp:
            svc_env["AMQP_URL"] = amqp
        svc_env.update(self.env)
        svc_env.update(self.extra_env)
        self._spawn("order-service", svc_env, f"{name}.order-service.log")
        self.service_url = f"http://127.0.0.1:{ports['api']}"
        self.users_url = f"http://127.0.0.1:{ports['users']}"
        self.products_url = f"http://127.0.0.1:{ports['products']}"
        admin = f"http://127.0.0.1:{ports['admin']}"
        wait_http(admin + "/__admin/faults", 20)
        wait_http(self.service_url + "/health/ready", 30)
        self.chaos = Chaos(admin, admin, log)
        self.sim_admin = admin
        log(f"started upstream-sim (admin {admin}) and order-service ({self.service_url})"
            + (f", broker through proxy 127.0.0.1:{self.proxy.port}" if self.proxy else ""))

    def _spawn(self, binary, env, logname):
        path = os.path.join(self.bin_dir, binary)
        if not os.access(path, os.X_OK):
            raise SystemExit(f"{path} not found: cargo build --workspace --bins, or set --bin-dir")
        out = open(os.path.join(self.workdir, logname), "w")
        self.procs.append(subprocess.Popen([path], env=env, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL))

    def broker_down(self):
        self.proxy.cut()

    def broker_up(self):
        self.proxy.restore()

    def stop(self):
        for p in reversed(self.procs):
            p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        if self.proxy:
            self.proxy.stop()
            self.proxy = None


class RemoteStack:
    """A stack that already runs (e.g. docker compose): the runner only loads it and injects faults."""

    def __init__(self, service_url, user_sim, product_sim, down_cmd, up_cmd):
        self.service_url, self.user_sim, self.product_sim = service_url.rstrip("/"), user_sim, product_sim
        self.down_cmd, self.up_cmd = down_cmd, up_cmd
        self.proxy, self.chaos = None, None

    def start(self, name, log, broker_proxy=False, self_started_only=False):
        if self_started_only:
            raise SkipExperiment("needs the runner's own simulator (a second healthy product)")
        if broker_proxy and not (self.down_cmd and self.up_cmd):
            raise SkipExperiment("needs --broker-outage-cmd and --broker-restore-cmd against a running stack")
        self.chaos = Chaos(self.user_sim, self.product_sim, log)
        self.chaos("reset")
        wait_http(self.service_url + "/health/ready", 10)

    def broker_down(self):
        subprocess.run(self.down_cmd, shell=True, check=True, timeout=120)

    def broker_up(self):
        subprocess.run(self.up_cmd, shell=True, check=True, timeout=120)

    def stop(self):
        if self.chaos is None:
            return
        try:
            self.chaos("reset")
        except RuntimeError:
            pass


class SkipExperiment(Exception):
    pass


def read_json(url):
    with urllib.request.urlopen(url, timeout=3) as r:
        return json.load(r)
