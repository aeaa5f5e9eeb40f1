"""wrk (Debian's package) as the load generator: one Lua script per run, a JSON line back.

wrk is closed-loop (each connection sends its next request when the last answered); a `pace_ms`
turns each connection into a paced client instead. Latencies are wrk's own, in microseconds.
"""

import json
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor

_SCRIPT = r"""
wrk.method = %(method)s
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
%(delay)s
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do merged[code] = (merged[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(merged) do table.insert(parts, string.format('"%%d":%%d', code, n)) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d,' ..
    '"mean_us":%%.1f,"socket_errors":%%d,"timeouts":%%d,"statuses":{%%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean,
    e.connect + e.read + e.write, e.timeout, table.concat(parts, ",")))
end
"""


def lua_string(s):
    return "nil" if s is None else json.dumps(s)


def require():
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")


def run(url, seconds, connections, threads=1, method="GET", body=None, pace_ms=None, timeout_s=5):
    """Drive `url` for `seconds`; returns wrk's figures (dict) plus `rate` (requests/s)."""
    threads = max(1, min(threads, connections))
    delay = f"function delay() return {pace_ms} end" if pace_ms else ""
    script = _SCRIPT % {"method": lua_string(method), "body": lua_string(body), "delay": delay}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as f:
        f.write(script)
        f.flush()
        cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout_s}s",
               "-s", f.name, url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[len("WRKJSON "):])
            r["statuses"] = {int(k): v for k, v in r["statuses"].items()}
            r["rate"] = r["requests"] / (r["duration_us"] / 1e6)
            return r
    raise RuntimeError(f"wrk printed no figures ({' '.join(cmd)}):\n{out.stdout}{out.stderr}")


def run_async(*args, **kwargs):
    """`run` in a thread, for load that must overlap another measurement; `.result()` joins it."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(run, *args, **kwargs)
    pool.shutdown(wait=False)
    return future
