"""One child process per binary. `Simulator` and `Service` know their binary's environment
variables and where they listen; a `Service` can be started any number of times (replicas on
their own ports, one database), and `Process` runs any other program (a load balancer, a pool)."""

import os
import subprocess

from . import config
from .net import free_port, wait_http

# The simulator's own default admin address (simulator/src/main.rs), where chaos/lib.sh looks.
SIM_ADMIN_DEFAULT = "127.0.0.1:8083"


def binary(bin_dir, name):
    path = os.path.join(bin_dir, name)
    if not os.access(path, os.X_OK):
        raise SystemExit(f"{path} not found: cargo build --workspace --bins, or set --bin-dir / BIN_DIR")
    return path


def environment(overrides):
    """This process's environment with `overrides` applied; an override of None unsets."""
    env = dict(os.environ)
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def host_port(url):
    """'http://127.0.0.1:8082/' → '127.0.0.1:8082'."""
    return url.split("://", 1)[-1].split("/", 1)[0]


class Process:
    """A child with its environment; output to `log_path` (None: this terminal). Stopped with
    SIGTERM (the service drains), killed if it is still there after `grace` seconds."""

    def __init__(self, argv, env=None, log_path=None, name=None):
        self.argv, self.env, self.log_path = list(argv), environment(env or {}), log_path
        self.name = name or os.path.basename(self.argv[0])
        self.proc, self._log, self._starts = None, None, 0

    def start(self):
        """Starts the program; a restart appends to the same log."""
        out = None
        if self.log_path:
            if self._log:
                self._log.close()
            out = self._log = open(self.log_path, "a" if self._starts else "w")
        self._starts += 1
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT if out else None)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self):
        if self.alive():
            self.proc.terminate()

    def stop(self, grace=15):
        if self.proc is None:
            return
        self.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._log:
            self._log.close()
            self._log = None

    def tail(self, lines=20):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])


class Simulator(Process):
    """upstream-sim: users, products and the fault-injection admin API, each on its own address
    (a free loopback port unless given). `catalogue` replaces the built-in fault table."""

    def __init__(self, bin_dir, *, users_addr=None, products_addr=None, admin_addr=None, catalogue=None,
                 env=None, log_path=None, name="upstream-sim"):
        self.users_addr = users_addr or f"127.0.0.1:{free_port()}"
        self.products_addr = products_addr or f"127.0.0.1:{free_port()}"
        self.admin_addr = admin_addr or f"127.0.0.1:{free_port()}"
        own = {"SIM_USERS_ADDR": self.users_addr, "SIM_PRODUCTS_ADDR": self.products_addr,
               "SIM_ADMIN_ADDR": self.admin_addr}
        if catalogue:
            own["SIM_CATALOGUE"] = catalogue
        super().__init__([binary(bin_dir, "upstream-sim")], {**own, **(env or {})}, log_path, name)

    @classmethod
    def at_defaults(cls, bin_dir, **kwargs):
        """On the addresses the service's defaults point at (USER_/PRODUCT_SERVICE_URL) and the
        chaos scripts' default admin address: what `scripts/dev` runs."""
        d = config.defaults(bin_dir)
        return cls(bin_dir, users_addr=host_port(d["USER_SERVICE_URL"]),
                   products_addr=host_port(d["PRODUCT_SERVICE_URL"]), admin_addr=SIM_ADMIN_DEFAULT, **kwargs)

    users_url = property(lambda self: f"http://{self.users_addr}")
    products_url = property(lambda self: f"http://{self.products_addr}")
    admin_url = property(lambda self: f"http://{self.admin_addr}")

    def start(self, seconds=20):
        super().start()
        wait_http(self.admin_url + "/__admin/faults", seconds, self.alive)
        return self


class Service(Process):
    """order-service on `addr` (a free loopback port unless given) against the given upstreams.
    `database_url` / `amqp_url` of None leave the variable as the environment (or the default)
    has it; `env` adds any other variable (None unsets). Ready when /health/ready answers 200."""

    def __init__(self, bin_dir, *, users_url, products_url, database_url=None, amqp_url=None, addr=None,
                 env=None, log_path=None, name="order-service"):
        self.bin_dir = bin_dir
        self.addr = addr or f"127.0.0.1:{free_port()}"
        own = {"HTTP_ADDR": self.addr, "USER_SERVICE_URL": users_url, "PRODUCT_SERVICE_URL": products_url}
        if database_url is not None:
            own["DATABASE_URL"] = database_url
        if amqp_url is not None:
            own["AMQP_URL"] = amqp_url
        super().__init__([binary(bin_dir, "order-service")], {**own, **(env or {})}, log_path, name)

    url = property(lambda self: f"http://{self.addr}")

    def config(self):
        """What this instance runs with ({VARIABLE: value}, passwords redacted)."""
        return config.print_config(self.bin_dir, self.env)

    def start(self, seconds=30, wait=True):
        """Starts the binary; with `wait`, returns once it is ready (else call `wait_ready`)."""
        super().start()
        if wait:
            self.wait_ready(seconds)
        return self

    def wait_ready(self, seconds=30):
        wait_http(self.url + "/health/ready", seconds, self.alive)
        return self
