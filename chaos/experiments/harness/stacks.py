"""What an experiment runs against: a fresh orderkit stack per experiment (the simulator and the
service on free loopback ports, the broker through a cut-able proxy), or a stack that already
runs. Faults go through the chaos/ scripts, the same ones people use."""

import subprocess

from orderkit.chaos import Chaos
from orderkit.net import wait_http
from orderkit.stack import Stack


class LocalStack:
    """upstream-sim + order-service started by the runner, per experiment, on free ports."""

    def __init__(self, bin_dir, workdir, database_url, amqp_url, catalogue, env, extra_env):
        self.bin_dir, self.workdir = bin_dir, workdir
        self.database_url, self.amqp_url, self.catalogue = database_url, amqp_url, catalogue
        self.env, self.extra_env = env, extra_env
        self.stack = None

    def start(self, name, log, broker_proxy=False, self_started_only=False):
        self.stack = Stack(self.bin_dir, database_url=self.database_url, amqp_url=self.amqp_url,
                           env={"RUST_LOG": "info", **self.env, **self.extra_env}, sim_env={"RUST_LOG": "warn"},
                           catalogue=self.catalogue, logs=self.workdir, name=name, broker_proxy=broker_proxy,
                           log=log).start()
        self.service_url, self.chaos = self.stack.service_url, self.stack.chaos
        self.sim_admin_url = self.stack.admin_url
        # With ADMIN_ADDR set, /metrics is served there and not on the API port.
        admin = self.stack.service.env.get("ADMIN_ADDR")
        self.metrics_url = f"http://{admin}" if admin else self.service_url

    def broker_down(self):
        self.stack.broker_down()

    def broker_up(self):
        self.stack.broker_up()

    def stop(self):
        if self.stack:
            self.stack.stop()


class RemoteStack:
    """A stack that already runs (e.g. docker compose): the runner only loads it and injects faults."""

    def __init__(self, service_url, user_sim, product_sim, down_cmd, up_cmd):
        self.service_url, self.user_sim, self.product_sim = service_url.rstrip("/"), user_sim, product_sim
        self.sim_admin_url, self.metrics_url = product_sim.rstrip("/"), self.service_url
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
