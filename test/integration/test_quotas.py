"""Quotas through the real binary (SPEC section 2 `quotas`, section 3 step 1b):
a connection quota (the N+1-th connection gets 429 client_limit), a rate
quota (429 rate_limited with Retry-After), a bandwidth quota whose paced
transfers take the time its budget says and arrive whole (a tunnel's download,
a plain-HTTP GET and PUT, a GET inside an inspected tunnel), quotas in report
mode, the `quota` log field and the quota metrics.

The plain-HTTP tests bind port 80 of their own 127.0.0.X (plain HTTP goes to
port 80 only): they need root and are skipped otherwise.

Run: S3GATE_BIN=../../build/s3gate python3 run.py test_quotas
"""

import hashlib
import os
import socket
import ssl
import time
import unittest

import harness as h

PACED_BYTES = 16 << 20  # 16 MiB
PACED_BITS = 40_000_000  # 40 Mbit/s: 5 MB/s, about 3.4 s for 16 MiB
PACE_TOLERANCE = 0.15
MEDIA = h.s3_name("media")


def object_responder(req):
    """An S3-like origin: a GET answers PACED_BYTES of the pattern, a PUT the
    digest and length of the body it received."""
    if req["method"] == "GET":
        return [h.http_response(200, headers=[("Content-Length", PACED_BYTES)], length=False),
                h.pattern_chunks(PACED_BYTES)]
    return [h.http_response(200, f"{req['sha256']} {req['body_len']}".encode())]


class QuotaTest(h.ForwardTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.big_source = h.SourceServer(PACED_BYTES)
        # An HTTP origin over TLS (the test CA) on a port of 127.0.0.1 (every
        # name resolves there), for requests inside inspected tunnels.
        cls.tls_origin = h.ScriptedUpstream(object_responder, port=0, name="tls-origin")
        cls.upstream_ports = cls.upstream_ports + [cls.big_source.port, cls.tls_origin.port]

    @classmethod
    def tearDownClass(cls):
        for name in ("big_source", "tls_origin"):
            if getattr(cls, name, None) is not None:
                getattr(cls, name).stop()
        super().tearDownClass()

    def quota_proxy(self, quotas, **overrides):
        overrides["quotas"] = quotas
        return self.start_proxy(overrides)

    def target(self, port):
        return f"{h.s3_name('media')}:{port}"

    def tunnel(self):
        """An open tunnel to the echo server; returns the socket."""
        sock, resp = h.proxy_connect(self.proxy.port, self.target(self.echo.port))
        self.addCleanup(sock.close)
        self.assertEqual(resp.status, 200, repr(resp))
        self.assertEqual(h.echo_roundtrip(sock, b"ping\n"), b"ping\n")
        return sock

    def limited(self, status_reason):
        """CONNECT on a new connection, expecting a 429 with `status_reason`."""
        sock, resp = h.proxy_connect(self.proxy.port, self.target(self.echo.port))
        sock.close()
        body = self.assert_error(resp, 429, "connection_limit_reached", status_reason)
        return resp, body

    def test_connection_quota(self):
        self.quota_proxy([
            # Not this client: an identity-only entry needs an identity.
            {"name": "certified", "identities": ["render-node"], "max_connections": 1},
            {"name": "conn", "clients": ["127.0.0.0/8"], "max_connections": 3},
        ])
        socks = [self.tunnel() for _ in range(3)]
        resp, body = self.limited("client_limit")
        self.assertIn("conn", body)
        self.assertIsNone(resp.header("Retry-After"))
        rec = self.proxy.wait_for_log(lambda r: r.get("reason") == "client_limit")
        self.assert_log_shape(rec)
        self.assertEqual(rec["status"], 429)
        self.assertEqual(rec["decision"], "deny")
        self.assertEqual(rec["quota"], "conn")
        # The open tunnels are untouched; one closed frees its place.
        for sock in socks:
            self.assertEqual(h.echo_roundtrip(sock, b"still here\n"), b"still here\n")
        socks[0].close()
        h.wait_until(lambda: len([r for r in self.proxy.access_lines()
                                  if r.get("status") == 200]) >= 1,
                     message="the closed tunnel's log line")
        self.tunnel()
        allowed = [r for r in self.proxy.access_lines() if r.get("status") == 200]
        self.assertTrue(all(r.get("quota") == "conn" for r in allowed), allowed)
        metrics = self.metrics_text()
        self.assertEqual(h.metric_value(metrics, "s3gate_quota_limited_total", quota="conn",
                                        reason="client_limit"), 1)
        self.assertEqual(h.metric_value(metrics, "s3gate_quota_limited_total", quota="conn",
                                        reason="rate_limited"), 0)
        self.assertEqual(h.metric_value(metrics, "s3gate_denied_total", reason="client_limit"), 1)

    def test_rate_quota_with_retry_after(self):
        self.quota_proxy([{"name": "rate", "requests_per_second": 3}])
        for _ in range(3):
            self.tunnel().close()
        resp, body = self.limited("rate_limited")
        self.assertEqual(resp.header("Retry-After"), "1", repr(resp))
        self.assertIn("rate", body)
        rec = self.proxy.wait_for_log(lambda r: r.get("reason") == "rate_limited")
        self.assertEqual(rec["status"], 429)
        self.assertEqual(rec["quota"], "rate")
        self.assertEqual(rec["method"], "CONNECT")
        # After Retry-After, tokens are back.
        time.sleep(1.05)
        self.tunnel()
        metrics = self.metrics_text()
        self.assertEqual(h.metric_value(metrics, "s3gate_quota_limited_total", quota="rate",
                                        reason="rate_limited"), 1)

    def test_rate_quota_per_address_is_not_shared(self):
        """per: address budgets are the client address's own; per: quota is shared."""
        self.quota_proxy([{"name": "shared", "per": "quota", "requests_per_second": 2,
                           "clients": ["127.0.0.2/32", "127.0.0.3/32"]},
                          {"name": "own", "per": "address", "requests_per_second": 1}])

        def connect_from(source):
            sock = socket.create_connection((h.LOOPBACK, self.proxy.port), timeout=10,
                                            source_address=(source, 0))
            sock.sendall(h.connect_request(self.target(self.echo.port)))
            resp = h.read_head(sock, 10)
            sock.close()
            return resp.status

        self.assertEqual(connect_from("127.0.0.4"), 200)
        self.assertEqual(connect_from("127.0.0.5"), 200)  # another address, another budget
        self.assertEqual(connect_from("127.0.0.4"), 429)
        self.assertEqual(connect_from("127.0.0.2"), 200)
        self.assertEqual(connect_from("127.0.0.3"), 200)  # the same budget as .2: its last token
        self.assertEqual(connect_from("127.0.0.2"), 429)
        self.assertEqual(connect_from("127.0.0.3"), 429)

    def test_quotas_hold_in_report_mode(self):
        self.quota_proxy([{"name": "report-conn", "max_connections": 1, "requests_per_second": 2}],
                         mode="report", buckets=[])
        sock, resp = h.proxy_connect(self.proxy.port, self.target(self.echo.port))
        self.addCleanup(sock.close)
        self.assertEqual(resp.status, 200, "report mode lets the bucket denial through")
        self.limited("client_limit")
        sock.close()
        rec = self.proxy.wait_for_log(lambda r: r.get("status") == 200)
        self.assertEqual(rec["decision"], "report")
        self.assertEqual(rec["quota"], "report-conn")
        # Its tokens: one was taken by the first tunnel; one is left, then none.
        self.tunnel().close()
        h.wait_until(lambda: len([r for r in self.proxy.access_lines()
                                  if r.get("status") == 200]) >= 2,
                     message="the second tunnel's log line (its connection counted no more)")
        self.limited("rate_limited")

    def test_paced_download_takes_the_budgets_time(self):
        self.quota_proxy([{"name": "bw", "bandwidth": "40Mbit"}],
                         limits={"idle_timeout": "30s"})
        sock, resp = h.proxy_connect(self.proxy.port, self.target(self.big_source.port), timeout=30)
        self.assertEqual(resp.status, 200, repr(resp))
        start = time.monotonic()
        digest = hashlib.sha256(resp.rest)
        got = len(resp.rest)
        sock.settimeout(30)
        deadline = start + 60
        while time.monotonic() < deadline:
            data = sock.recv(1 << 20)
            if not data:
                break
            digest.update(data)
            got += len(data)
        elapsed = time.monotonic() - start
        sock.close()
        self.assertEqual(got, PACED_BYTES, "nothing cut")
        self.assertEqual(digest.hexdigest(), h.pattern_sha256(PACED_BYTES), "byte-exact")
        expected = PACED_BYTES * 8 / PACED_BITS
        ratio = elapsed / expected
        print(f"\npaced download: {PACED_BYTES} bytes at {PACED_BITS} bit/s took {elapsed:.3f} s, "
              f"budget says {expected:.3f} s (ratio {ratio:.3f})", flush=True)
        self.assertLess(abs(ratio - 1), PACE_TOLERANCE,
                        f"took {elapsed:.3f} s, the budget says {expected:.3f} s")
        rec = self.proxy.wait_for_log(lambda r: r.get("status") == 200)
        self.assertEqual(rec["bytes_down"], PACED_BYTES)
        self.assertEqual(rec["quota"], "bw")
        metrics = self.metrics_text()
        paced = h.metric_value(metrics, "s3gate_quota_paced_seconds_total", quota="bw",
                               direction="down")
        # Most of the transfer was spent waiting for the budget.
        self.assertGreater(paced, expected * 0.5, metrics)
        self.assertEqual(h.metric_value(metrics, "s3gate_quota_paced_seconds_total", quota="bw",
                                        direction="up"), 0)

    def test_unpaced_without_quota(self):
        """The same download without a quota is not held to 40 Mbit/s (the test
        above measures the quota, not the machine)."""
        self.quota_proxy([{"name": "other", "clients": ["10.0.0.0/8"], "bandwidth": "40Mbit"}],
                         limits={"idle_timeout": "30s"})
        sock, resp = h.proxy_connect(self.proxy.port, self.target(self.big_source.port), timeout=30)
        self.assertEqual(resp.status, 200, repr(resp))
        start = time.monotonic()
        got, end = h.recv_until_eof(sock, timeout=30, limit=PACED_BYTES + 1)
        elapsed = time.monotonic() - start
        sock.close()
        self.assertEqual(len(resp.rest) + len(got), PACED_BYTES)
        self.assertLess(elapsed, PACED_BYTES * 8 / PACED_BITS * 0.5)
        rec = self.proxy.wait_for_log(lambda r: r.get("status") == 200)
        self.assertNotIn("quota", rec)

    # --- bandwidth quotas on requests (the forwarder): plain HTTP and inspect

    BANDWIDTH = {"quotas": [{"name": "bw", "bandwidth": "40Mbit"}],
                 "limits": {"idle_timeout": "30s"}}

    def plain_http_origin(self):
        """A plain-HTTP origin on port 80 of its own 127.0.0.X, the S3 names
        pinned to it, and the proxy sending plain HTTP on as plain HTTP (so
        that bodies are spliced); returns the URL of its object."""
        up = self.upstream(responder=object_responder, plain=True)
        self.start_proxy(config=self.forward_config(up.ip, self.BANDWIDTH, tls=False))
        return f"http://{MEDIA}/big"

    def timed_exchange(self, client, request, body_chunks=()):
        """Sends `request` (and the body chunks), reads the response; returns
        (reply, body length, body sha256, seconds from the first byte sent to
        the last one received)."""
        digest = hashlib.sha256()
        got = [0]
        small = bytearray()  # a short body is kept as reply.body

        def sink(data):
            digest.update(data)
            got[0] += len(data)
            if len(small) < 4096:
                small.extend(data[:4096 - len(small)])

        start = time.monotonic()
        client.send(request)
        for chunk in body_chunks:
            client.send(chunk)
        reply = client.read_response(timeout=60, sink=sink)
        elapsed = time.monotonic() - start
        self.assertIsNotNone(reply, "the proxy closed before answering")
        reply.body = bytes(small)
        return reply, got[0], digest.hexdigest(), elapsed

    def assert_paced(self, what, elapsed, direction, kind):
        """The transfer took the budget's time, the wait was counted in
        `direction` (only), and the log line names the quota."""
        expected = PACED_BYTES * 8 / PACED_BITS
        ratio = elapsed / expected
        print(f"\n{what}: {PACED_BYTES} bytes at {PACED_BITS} bit/s took {elapsed:.3f} s, "
              f"budget says {expected:.3f} s (ratio {ratio:.3f})", flush=True)
        self.assertLess(abs(ratio - 1), PACE_TOLERANCE,
                        f"took {elapsed:.3f} s, the budget says {expected:.3f} s")
        metrics = self.metrics_text()
        other = "up" if direction == "down" else "down"
        paced = h.metric_value(metrics, "s3gate_quota_paced_seconds_total", quota="bw",
                               direction=direction)
        self.assertGreater(paced, expected * 0.5, metrics)
        self.assertEqual(h.metric_value(metrics, "s3gate_quota_paced_seconds_total", quota="bw",
                                        direction=other), 0)
        rec = self.proxy.wait_for_log(lambda r: r.get("kind") == kind and r.get("status") == 200)
        self.assert_log_shape(rec)
        self.assertEqual(rec["quota"], "bw")
        return rec

    @unittest.skipIf(h.NEEDS_ROOT, h.NEEDS_ROOT or "")
    def test_paced_plain_http_get(self):
        url = self.plain_http_origin()
        c = h.HttpClient(self.proxy.port, timeout=60)
        self.addCleanup(c.close)
        reply, got, digest, elapsed = self.timed_exchange(c, h.http_request("GET", url))
        self.assertEqual(reply.status, 200, repr(reply))
        self.assertEqual(got, PACED_BYTES, "nothing cut")
        self.assertEqual(digest, h.pattern_sha256(PACED_BYTES), "byte-exact")
        rec = self.assert_paced("paced plain-HTTP GET", elapsed, "down", "http")
        self.assertEqual(rec["bytes_down"], len(reply.head) + PACED_BYTES)
        # The connection is kept alive after a paced exchange.
        c.send(h.http_request("PUT", url, body=b"small"))
        self.assertEqual(c.read_response().body, hashlib.sha256(b"small").hexdigest().encode()
                         + b" 5")

    @unittest.skipIf(h.NEEDS_ROOT, h.NEEDS_ROOT or "")
    def test_paced_plain_http_put(self):
        url = self.plain_http_origin()
        c = h.HttpClient(self.proxy.port, timeout=60)
        self.addCleanup(c.close)
        head = h.http_request("PUT", url, length=PACED_BYTES)
        reply, _, _, elapsed = self.timed_exchange(c, head, h.pattern_chunks(PACED_BYTES))
        self.assertEqual(reply.status, 200, repr(reply))
        # The origin received every byte, in order.
        self.assertEqual(reply.body, f"{h.pattern_sha256(PACED_BYTES)} {PACED_BYTES}".encode())
        rec = self.assert_paced("paced plain-HTTP PUT", elapsed, "up", "http")
        self.assertGreater(rec["bytes_up"], PACED_BYTES)

    def test_paced_inside_an_inspected_tunnel(self):
        self.start_proxy(h.deep_merge(self.BANDWIDTH, {
            "http": {"ca_file": self.pki.ca_file},
            "tunnel": {"inspect": True, "inspect_certificate": self.pki.cert_file,
                       "inspect_private_key": self.pki.key_file}}))
        c = h.HttpClient(self.proxy.port, timeout=60)
        self.addCleanup(c.close)
        c.send(h.connect_request(f"{MEDIA}:{self.tls_origin.port}"))
        resp = h.read_head(c.sock, timeout=10)
        self.assertEqual(resp.status, 200, repr(resp))
        ctx = ssl.create_default_context(cafile=self.pki.ca_file)
        c.sock = ctx.wrap_socket(c.sock, server_hostname=MEDIA)
        request = f"GET /big HTTP/1.1\r\nHost: {MEDIA}\r\n\r\n".encode()
        reply, got, digest, elapsed = self.timed_exchange(c, request)
        self.assertEqual(reply.status, 200, repr(reply))
        self.assertEqual(got, PACED_BYTES, "nothing cut")
        self.assertEqual(digest, h.pattern_sha256(PACED_BYTES), "byte-exact")
        self.assert_paced("paced GET inside an inspected tunnel", elapsed, "down", "inspect")

    def test_reload_keeps_budgets(self):
        """Budgets are state: a reload does not hand out a fresh allowance, and a
        changed limit applies at the next connection."""
        self.quota_proxy([{"name": "conn", "max_connections": 2}])
        socks = [self.tunnel() for _ in range(2)]
        cfg = dict(self.proxy.config)
        cfg["quotas"] = [{"name": "conn", "max_connections": 2, "requests_per_second": 100}]
        self.proxy.write_config(cfg)
        self.proxy.signal(1)  # SIGHUP
        h.wait_until(lambda: h.metric_value(self.metrics_text(), "s3gate_config_reloads_total",
                                            result="success") == 1, message="the reload")
        self.limited("client_limit")
        cfg["quotas"] = [{"name": "conn", "max_connections": 3}]
        self.proxy.write_config(cfg)
        self.proxy.signal(1)
        h.wait_until(lambda: h.metric_value(self.metrics_text(), "s3gate_config_reloads_total",
                                            result="success") == 2, message="the second reload")
        self.tunnel()
        for sock in socks:
            self.assertEqual(h.echo_roundtrip(sock, b"x\n"), b"x\n")


if __name__ == "__main__":
    unittest.main()
