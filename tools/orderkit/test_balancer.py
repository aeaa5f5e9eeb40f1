"""Unit tests of the HAProxy and PgBouncer configurations: python3 -m unittest discover -s tools -p 'test_*.py'."""

import os
import shutil
import subprocess
import tempfile
import unittest

from orderkit.balancer import Checks, haproxy_config, haproxy_log, pgbouncer_config


class ShutdownDelay(unittest.TestCase):
    def test_out_of_rotation_counts_the_next_check_the_fast_rechecks_and_their_timeouts(self):
        c = Checks(inter=500, fastinter=200, fall=3, timeout=400)
        self.assertEqual(c.out_of_rotation_ms(), 500 + 2 * 200 + 3 * 400)

    def test_the_delay_the_replicas_get_covers_the_time_out_of_rotation(self):
        for c in (Checks(), Checks(inter=2000, fall=3), Checks(inter=100, fastinter=100, fall=1, timeout=100)):
            delay = c.shutdown_delay_ms()
            self.assertGreaterEqual(delay, c.out_of_rotation_ms() + 1000, c)
            c.check_delay(delay)

    def test_a_delay_shorter_than_the_checks_need_is_refused(self):
        c = Checks()
        with self.assertRaisesRegex(ValueError, "SHUTDOWN_DELAY_MS=0"):
            c.check_delay(0)
        with self.assertRaises(ValueError):
            c.check_delay(c.out_of_rotation_ms() - 1)


class HAProxyConfig(unittest.TestCase):
    def config(self):
        return haproxy_config(frontend_port=1, stats_port=2, servers=[("r1", "127.0.0.1:3"), ("r2", "127.0.0.1:4")],
                              socket_path="/tmp/x.sock")

    def test_only_connection_failures_are_retried_and_on_another_replica(self):
        text = self.config()
        retry_on = [line.split()[1:] for line in text.splitlines() if line.strip().startswith("retry-on")]
        self.assertEqual(retry_on, [["conn-failure"]])
        self.assertIn("option redispatch 1", text)

    def test_readiness_is_checked_with_the_timings_of_checks(self):
        text = self.config()
        self.assertIn("option httpchk GET /health/ready", text)
        self.assertIn("check inter 500ms fastinter 200ms downinter 1000ms fall 2 rise 2", text)
        self.assertIn("server r2 127.0.0.1:4", text)

    @unittest.skipIf(shutil.which("haproxy") is None, "haproxy not installed")
    def test_haproxy_accepts_it(self):
        with tempfile.NamedTemporaryFile("w", suffix=".cfg") as f:
            f.write(self.config())
            f.flush()
            out = subprocess.run(["haproxy", "-c", "-f", f.name], capture_output=True, text=True)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)


class HAProxyLog(unittest.TestCase):
    def test_a_request_starts_after_the_handshake_and_the_idle_time(self):
        with tempfile.NamedTemporaryFile("w") as f:
            f.write("fleet 1700000000.250 0 1000 300 replicas/r2 201 0 ---- POST /v1/orders\n")
            f.write("fleet 1700000001.000 0 0 5 replicas/r1 502 +1 SH-- POST /v1/orders\n")
            f.write("not a request line\n")
            f.flush()
            a, b = haproxy_log(f.name)
        self.assertAlmostEqual(a.start, 1700000001.25)
        self.assertAlmostEqual(a.end, 1700000001.55)
        self.assertEqual((a.server, a.status, a.retries), ("r2", 201, 0))
        self.assertEqual((b.status, b.retries, b.termination), (502, 1, "SH--"))


class PgBouncerConfig(unittest.TestCase):
    def test_every_database_maps_to_the_server_in_the_pool_mode_asked(self):
        text = pgbouncer_config(port=6432, server_host="127.0.0.1", server_port="5432", pool_mode="transaction",
                                pool_size=7, workdir="/w")
        self.assertIn("* = host=127.0.0.1 port=5432", text)
        self.assertIn("pool_mode = transaction", text)
        self.assertIn("default_pool_size = 7", text)
        self.assertIn(f"auth_file = {os.path.join('/w', 'userlist.txt')}", text)


if __name__ == "__main__":
    unittest.main()
