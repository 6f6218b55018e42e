"""The embedded default, as the README's first command runs it: `s3gate` with no -c
listens on 127.0.0.1:3128, serves admin on 127.0.0.1:9464, logs to stdout and
lets loopback clients reach S3 names on port 443 (and nothing else)."""

import contextlib
import json
import hashlib
import os
import signal
import socket
import subprocess
import tempfile
import unittest
import urllib.request

import harness as h

PROXY = ("127.0.0.1", 3128)
ADMIN = ("127.0.0.1", 9464)


def port_free(addr):
    with contextlib.closing(socket.socket()) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
            return True
        except OSError:
            return False


class EmbeddedDefault(unittest.TestCase):
    def setUp(self):
        if h.s3gate_binary() is None:
            self.skipTest("the s3gate binary is not built (set S3GATE_BIN)")
        if not (port_free(PROXY) and port_free(ADMIN)):
            self.skipTest("127.0.0.1:3128 or :9464 is in use on this machine; the default needs both")
        self.dir = tempfile.TemporaryDirectory()
        self.out = open(os.path.join(self.dir.name, "stdout"), "wb")
        self.err = open(os.path.join(self.dir.name, "stderr"), "wb")
        self.proc = subprocess.Popen([h.s3gate_binary()], stdout=self.out, stderr=self.err,
                                     stdin=subprocess.DEVNULL, env=h.clean_env())

        def accepting():
            self.assertIsNone(self.proc.poll(), "s3gate exited at start")
            with contextlib.suppress(OSError):
                with socket.create_connection(PROXY, timeout=0.5):
                    return True
            return False

        h.wait_until(accepting, 10, message="s3gate on 127.0.0.1:3128")

    def tearDown(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.assertEqual(self.proc.wait(timeout=10), 0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.fail("s3gate did not exit within 10 s of SIGTERM")
        self.out.close()
        self.err.close()
        self.dir.cleanup()

    def access_lines(self):
        with open(os.path.join(self.dir.name, "stdout"), "rb") as f:
            return [json.loads(line) for line in f.read().splitlines() if line.strip()]

    def test_ping_and_admin(self):
        resp, _ = h.send_raw(PROXY[1], b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(resp.status, 200)
        with urllib.request.urlopen("http://127.0.0.1:9464/ping", timeout=5) as r:
            self.assertEqual(r.read(), b"OK")
        with urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=5) as r:
            text = r.read().decode()
        self.assertIn('s3gate_requests_total{decision="allow",kind="local"} 1', text)
        # The embedded default's digest: the sha256 of the YAML it prints.
        default = subprocess.check_output([h.s3gate_binary(), "--print-default-config"])
        self.assertIn(f's3gate_config_info{{sha256="{hashlib.sha256(default).hexdigest()}"}} 1', text)

    def test_only_s3_names_on_443(self):
        cases = [
            ("example.com:443", "host_not_allowed"),
            ("media.s3.us-west-2.amazonaws.com:80", "port_not_allowed"),
            ("10.0.0.1:443", "ip_literal_denied"),
            ("169.254.169.254:80", "ip_literal_denied"),
        ]
        for target, reason in cases:
            with self.subTest(target=target):
                sock, resp = h.proxy_connect(PROXY[1], target)
                sock.close()
                self.assertEqual(resp.status, 403)
                self.assertEqual(resp.proxy_status()["details"], reason)
        h.wait_until(lambda: len(self.access_lines()) >= len(cases), 5, message="log lines on stdout")
        lines = self.access_lines()
        # Two workers write their lines as their connections end: any order.
        self.assertEqual(sorted(l["reason"] for l in lines[:len(cases)]),
                         sorted(r for _, r in cases))

    def test_s3_name_is_allowed_for_loopback(self):
        # No route to S3 here: the decision is allow, the outcome an upstream
        # failure (DNS or connect), logged with decision "allow".
        sock, resp = h.proxy_connect(PROXY[1], "media.s3.us-west-2.amazonaws.com:443", timeout=30)
        sock.close()
        if resp.status == 200:
            return  # this machine can reach S3 after all
        self.assertIn(resp.status, (502, 504))
        self.assertIn(resp.proxy_status()["details"],
                      ("dns_failed", "dns_timeout", "connect_failed", "connect_timeout",
                       "dns_pin_violation"))
        h.wait_until(lambda: self.access_lines(), 5, message="a log line")
        rec = self.access_lines()[-1]
        self.assertEqual(rec["bucket"], "media")
        self.assertEqual(rec["rule"], "*")


if __name__ == "__main__":
    unittest.main()
