"""The simulator and one order-service on loopback, optionally with the broker behind a proxy
that can be cut: what `tools/stack`, the experiments and the benchmark start."""

import os

from . import config
from .chaos import Chaos
from .procs import Service, Simulator, environment
from .proxy import TcpProxy


class Stack:
    """`with Stack(bin_dir, database_url=…) as s:` starts the simulator, then the service wired to
    it; `s.service_url`, `s.chaos("outage", "product")`. `fixed_ports` puts everything where the
    binaries' defaults (and the README) say, else each on a free port. `logs` is a directory for
    `[name.]upstream-sim.log` / `[name.]order-service.log` (None: this terminal)."""

    def __init__(self, bin_dir, *, database_url=None, amqp_url=None, env=None, sim_env=None, catalogue=None,
                 fixed_ports=False, logs=None, name=None, broker_proxy=False, log=lambda msg: None):
        self.bin_dir, self.database_url, self.amqp_url = bin_dir, database_url, amqp_url
        self.env, self.sim_env, self.catalogue = dict(env or {}), dict(sim_env or {}), catalogue
        self.fixed_ports, self.logs, self.name = fixed_ports, logs, name
        self.broker_proxy, self.log = broker_proxy, log
        self.simulator = self.service = self.proxy = self.chaos = None

    def _log_path(self, binary):
        if not self.logs:
            return None
        return os.path.join(self.logs, f"{self.name}.{binary}.log" if self.name else f"{binary}.log")

    def start(self):
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self):
        sim = dict(catalogue=self.catalogue, env=self.sim_env, log_path=self._log_path("upstream-sim"))
        self.simulator = (Simulator.at_defaults(self.bin_dir, **sim) if self.fixed_ports
                          else Simulator(self.bin_dir, **sim))
        self.simulator.start()
        amqp = self.amqp_url
        if self.broker_proxy and amqp:
            target = amqp.split("@")[-1].split("/")[0]
            host, port = target.rsplit(":", 1)
            self.proxy = TcpProxy(host, int(port))
            self.proxy.start()
            amqp = amqp.replace(target, f"127.0.0.1:{self.proxy.port}")
        self.service = Service(self.bin_dir, users_url=self.simulator.users_url,
                               products_url=self.simulator.products_url, database_url=self.database_url,
                               amqp_url=amqp, addr=self._service_addr(), env=self.env,
                               log_path=self._log_path("order-service"))
        self.service.start()
        admin = self.simulator.admin_url
        self.chaos = Chaos(admin, admin, self.log)
        self.log(f"started upstream-sim (admin {admin}) and order-service ({self.service_url})"
                 + (f", broker through proxy 127.0.0.1:{self.proxy.port}" if self.proxy else ""))

    def _service_addr(self):
        """Fixed ports: HTTP_ADDR as the environment (or the default) has it; else a free port."""
        if not self.fixed_ports:
            return None
        return config.print_config(self.bin_dir, environment(self.env))["HTTP_ADDR"]

    service_url = property(lambda self: self.service.url)
    users_url = property(lambda self: self.simulator.users_url)
    products_url = property(lambda self: self.simulator.products_url)
    admin_url = property(lambda self: self.simulator.admin_url)

    def broker_down(self):
        self.proxy.cut()

    def broker_up(self):
        self.proxy.restore()

    def describe(self):
        """Where everything is (the database and broker as the service reports them: redacted)."""
        cfg = self.service.config()
        return {"service_url": self.service_url, "users_url": self.users_url, "products_url": self.products_url,
                "sim_admin_url": self.admin_url, "database_url": cfg.get("DATABASE_URL"),
                "amqp_url": cfg.get("AMQP_URL"), "service_pid": self.service.pid, "sim_pid": self.simulator.pid,
                "logs": self.logs}

    def stop(self):
        """The service first (it drains), then the simulator, then the proxy. Safe to call twice."""
        for p in (self.service, self.simulator):
            if p is not None:
                p.stop()
        if self.proxy:
            self.proxy.stop()
            self.proxy = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
