"""Loopback plumbing: a free port, waiting until an HTTP endpoint answers."""

import json
import socket
import time
import urllib.request


def free_port():
    """A port nobody listens on right now (the kernel's pick; another process may take it first)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, seconds, alive=None):
    """Returns once `url` answers 2xx/3xx; raises after `seconds`, or as soon as `alive()` is false
    (the process that should answer has exited)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if alive is not None and not alive():
                raise RuntimeError(f"{url}: the process that serves it exited")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {seconds} s")
            time.sleep(0.1)


def read_json(url, timeout=3):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)
