"""The service's configuration as the binary itself reports it: `order-service --print-config`
prints {VARIABLE: value or null} for every variable it reads (defaults when unset, passwords
redacted). This is the one source of the defaults; nothing in Python repeats them."""

import functools
import json
import os
import subprocess


def print_config(bin_dir, env):
    """What `order-service` in `bin_dir` would run with under exactly `env`."""
    path = os.path.join(bin_dir, "order-service")
    if not os.access(path, os.X_OK):
        raise SystemExit(f"{path} not found: cargo build --workspace --bins, or set --bin-dir / BIN_DIR "
                         "(the service's defaults are read from it)")
    try:
        out = subprocess.run([path, "--print-config"], env=env, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{path} --print-config printed nothing in 20 s (built before --print-config? rebuild)")
    if out.returncode != 0:
        raise RuntimeError(f"{path} --print-config failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


@functools.lru_cache(maxsize=None)
def _defaults(bin_dir):
    return print_config(os.path.abspath(bin_dir), {})


def defaults(bin_dir):
    """Every variable with its default ({} environment), as strings (None: unset, no default)."""
    return dict(_defaults(os.path.abspath(bin_dir)))


def numbers(values):
    """The integer-valued entries of a {VARIABLE: string} map, as ints (what hypotheses compute with)."""
    return {k: int(v) for k, v in values.items() if isinstance(v, str) and v.isdigit()}
