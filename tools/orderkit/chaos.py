"""Faults go through the chaos/ scripts, the same ones people use, pointed at a simulator's admin API."""

import os
import subprocess

from . import ROOT

CHAOS = os.path.join(ROOT, "chaos")


class Chaos:
    """`chaos("delay", "product", "5s")` runs chaos/delay against the given admin URLs, logging
    what it printed; raises if the script failed."""

    def __init__(self, user_sim, product_sim, log=lambda msg: None):
        self.env = dict(os.environ, USER_SIM_URL=user_sim, PRODUCT_SIM_URL=product_sim)
        self.log = log

    def __call__(self, *args):
        r = subprocess.run([os.path.join(CHAOS, args[0]), *args[1:]], env=self.env,
                           capture_output=True, text=True, timeout=15)
        self.log(f"$ chaos/{' '.join(args)}\n{r.stdout}{r.stderr}".rstrip())
        if r.returncode != 0:
            raise RuntimeError(f"chaos/{args[0]} failed: {r.stderr.strip()}")
