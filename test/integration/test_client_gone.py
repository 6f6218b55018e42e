"""A client that gives up while its request waits off the client connection:
its password being verified, its upstream name being resolved or its upstream
being connected. The proxy notices the close or reset at once (it watches the
client socket without consuming what the client sent ahead), cancels the wait,
logs the request with close client_eof / client_error and frees the connection.
A client that sends bytes ahead (a ClientHello right after CONNECT) while the
wait goes on is served as before."""

import os
import socket
import time
import unittest

import harness as h

MEDIA = h.s3_name("media")
SLOW_DNS = "5s"  # what a silent name would cost without the watch
NOTICE_WITHIN = 2.0  # seconds after the client's close; generous for a loaded 2-core machine


class SlowDns(h.DnsServer):
    """The harness's DNS server, each A query answered `delay` seconds late
    (AAAA queries wait behind it, so one lookup takes about `delay`)."""

    delay = 0.0

    def _handle(self, packet, tcp=False):
        if self.delay > 0:
            _, end = self.parse_name(packet, 12)
            if packet[end:end + 2] == b"\x00\x01":
                time.sleep(self.delay)
        return super()._handle(packet, tcp)


def cpu_seconds(pid):
    """User plus system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ClientGoneTest(h.ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dns.stop()
        cls.dns = SlowDns()

    def setUp(self):
        super().setUp()
        self.dns.delay = 0.0

    def start(self, overrides=None):
        cfg = {"workers": 1, "dns": {"timeout": SLOW_DNS, "attempts": 1},
               "limits": {"connect_timeout": "5s"}}
        return self.start_proxy(h.deep_merge(cfg, overrides or {}))

    def gauge(self, name):
        return h.metric_value(self.metrics_text(), name)

    def wait_connection_open(self):
        h.wait_until(lambda: self.gauge("s3gate_connections_active") == 1, 5.0,
                     message="the client's connection counted as active")

    def assert_noticed(self, closed_at, what):
        """The connection gauge is back to 0 soon after the client left."""
        h.wait_until(lambda: self.gauge("s3gate_connections_active") == 0, NOTICE_WITHIN,
                     message=f"s3gate_connections_active back to 0 within {NOTICE_WITHIN}s of {what}")
        elapsed = time.monotonic() - closed_at
        self.assertLess(elapsed, NOTICE_WITHIN)
        return elapsed

    def gone_line(self, client, closed_at, close, **expected):
        rec = self.proxy.log_for_client(client, timeout=8.0)
        logged_after = time.monotonic() - closed_at
        self.assertLess(logged_after, NOTICE_WITHIN,
                        f"the line came {logged_after:.2f}s after the client left: {rec}")
        self.assert_log(rec, close=close, status=0, bytes_up=0, bytes_down=0, upstream=None,
                        **expected)
        return rec

    def assert_counted_once(self, kind, decision):
        text = self.metrics_text()
        self.assertEqual(h.metric_value(text, "s3gate_requests_total", kind=kind,
                                        decision=decision), 1, text)
        for other in ("allow", "deny", "report"):
            if other != decision:
                self.assertEqual(h.metric_value(text, "s3gate_requests_total", kind=kind,
                                                decision=other), 0, text)
        self.assertEqual(h.metric_value(text, "s3gate_tunnels_active"), 0)

    def connect_then_leave(self, target, leave):
        sock = h.open_client(self.proxy.port)
        client = h.client_name(sock)
        sock.sendall(h.connect_request(target))
        self.wait_connection_open()
        time.sleep(0.2)
        closed_at = time.monotonic()
        leave(sock)
        return client, closed_at

    # (a) CONNECT, DNS silent, the client closes (FIN)
    def test_connect_client_closes_while_dns_is_silent(self):
        self.start()
        self.dns.set_failure(MEDIA, "drop")
        client, closed_at = self.connect_then_leave(f"{MEDIA}:{self.echo.port}",
                                                    lambda s: s.close())
        elapsed = self.assert_noticed(closed_at, "the client's FIN")
        self.gone_line(client, closed_at, "client_eof", kind="connect", method="CONNECT",
                       decision="allow", reason=None, host=MEDIA, bucket="media")
        self.assert_counted_once("connect", "allow")
        self.assertEqual(h.metric_value(self.metrics_text(), "s3gate_dns_lookups_total",
                                        result="failed"), 0, "the cancelled lookup was counted")
        print(f"\nFIN while DNS was silent noticed in {elapsed * 1000:.0f} ms")
        self.assert_settled()

    # (b) the same, with a reset
    def test_connect_client_resets_while_dns_is_silent(self):
        self.start()
        self.dns.set_failure(MEDIA, "drop")
        client, closed_at = self.connect_then_leave(f"{MEDIA}:{self.echo.port}", h.rst_close)
        self.assert_noticed(closed_at, "the client's RST")
        self.gone_line(client, closed_at, "client_error", kind="connect", decision="allow",
                       reason=None)
        self.assert_counted_once("connect", "allow")
        self.assert_settled()

    # the TCP connect to the upstream hangs (SYNs dropped) instead of DNS
    def test_connect_client_closes_while_upstream_connect_hangs(self):
        if not self.silent.works():
            self.skipTest("SYNs to the silent port are not dropped here")
        self.start()
        client, closed_at = self.connect_then_leave(f"{MEDIA}:{self.silent.port}",
                                                    lambda s: s.close())
        self.assert_noticed(closed_at, "the client's FIN")
        self.gone_line(client, closed_at, "client_eof", kind="connect", decision="allow")
        self.assert_counted_once("connect", "allow")
        self.assert_settled()

    # report mode: the would-be denial stays on the line and is counted once
    def test_report_mode_keeps_the_decision(self):
        self.start({"mode": "report"})
        other = h.s3_name("not-listed")
        self.dns.set_failure(other, "drop")
        client, closed_at = self.connect_then_leave(f"{other}:{self.echo.port}", h.rst_close)
        self.assert_noticed(closed_at, "the client's RST")
        self.gone_line(client, closed_at, "client_error", decision="report",
                       reason="bucket_not_allowed")
        self.assert_counted_once("connect", "report")
        self.assertEqual(h.metric_value(self.metrics_text(), "s3gate_denied_total",
                                        reason="bucket_not_allowed"), 1)
        self.assert_settled()

    # (c) plain HTTP: a GET, then the client shuts its write side while DNS is silent
    def test_plain_get_half_closed_while_dns_is_silent(self):
        self.start({"http": {"upstream_tls": False}})
        self.dns.set_failure(MEDIA, "drop")
        sock = h.open_client(self.proxy.port)
        self.addCleanup(sock.close)
        client = h.client_name(sock)
        url = f"http://{MEDIA}/key"
        sock.sendall(h.http_request("GET", url))
        self.wait_connection_open()
        time.sleep(0.2)
        closed_at = time.monotonic()
        sock.shutdown(socket.SHUT_WR)
        # Like nginx (499) and Squid (half_closed_clients off), a FIN while the
        # request waits is the client giving up: no answer, the connection closes.
        data, how = h.recv_until_eof(sock, timeout=NOTICE_WITHIN + 1)
        self.assertEqual((data, how), (b"", "eof"))
        self.assert_noticed(closed_at, "the client's FIN")
        self.gone_line(client, closed_at, "client_eof", kind="http", method="GET",
                       decision="allow", reason=None, host=MEDIA, bucket="media")
        self.assert_counted_once("http", "allow")
        self.assert_settled()

    def test_plain_get_reset_while_dns_is_silent(self):
        self.start({"http": {"upstream_tls": False}})
        self.dns.set_failure(MEDIA, "drop")
        sock = h.open_client(self.proxy.port)
        client = h.client_name(sock)
        sock.sendall(h.http_request("GET", f"http://{MEDIA}/key"))
        self.wait_connection_open()
        time.sleep(0.2)
        closed_at = time.monotonic()
        h.rst_close(sock)
        self.assert_noticed(closed_at, "the client's RST")
        self.gone_line(client, closed_at, "client_error", kind="http", decision="allow")
        self.assert_counted_once("http", "allow")
        self.assert_settled()

    # (e) bytes sent ahead while DNS is slow but answers: the tunnel works as before
    def test_bytes_sent_ahead_during_a_slow_lookup_reach_the_upstream(self):
        self.dns.delay = 1.5
        for split in (False, True):
            with self.subTest(split=split):
                self.start()  # a fresh process: no cached answer, the lookup waits
                pid = self.proxy.pid
                hello = b"\x16\x03\x01 a ClientHello sent ahead " + bytes([split])
                sock = h.open_client(self.proxy.port)
                self.addCleanup(sock.close)
                client = h.client_name(sock)
                head = h.connect_request(f"{MEDIA}:{self.echo.port}")
                cpu_before = cpu_seconds(pid)
                started = time.monotonic()
                if split:
                    # The head first, the bytes ahead once the lookup is under way:
                    # they wake the watch, which must not spin on them.
                    sock.sendall(head)
                    time.sleep(0.3)
                    sock.sendall(hello)
                else:
                    sock.sendall(head + hello)
                resp = h.read_head(sock, timeout=10)
                waited = time.monotonic() - started
                cpu = cpu_seconds(pid) - cpu_before
                self.assertIsNotNone(resp, "no answer to CONNECT")
                self.assertEqual(resp.status, 200, repr(resp))
                self.assertGreaterEqual(waited, 1.2, "the lookup was not slow")
                # A spinning watch would burn about `waited` seconds of CPU.
                self.assertLess(cpu, 0.3, f"{cpu:.2f}s of CPU over a {waited:.2f}s wait")
                got = resp.rest
                deadline = time.monotonic() + 5
                while len(got) < len(hello) and time.monotonic() < deadline:
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    data = sock.recv(4096)
                    if not data:
                        break
                    got += data
                self.assertEqual(got, hello, "the bytes sent ahead did not come back")
                self.assertEqual(h.echo_roundtrip(sock, b"after"), b"after")
                sock.close()
                rec = self.proxy.log_for_client(client)
                self.assert_log(rec, kind="connect", decision="allow", status=200,
                                close="client_eof", bytes_up=len(hello) + 5)
                print(f"\nsplit={split}: waited {waited:.2f}s, {cpu * 1000:.0f} ms of CPU")
                self.assert_settled()

    @unittest.skipIf(h.NEEDS_ROOT is not None, h.NEEDS_ROOT or "")
    def test_plain_body_sent_during_a_slow_lookup_is_forwarded(self):
        up = h.ScriptedUpstream(plain=True,
                                responder=lambda req: [h.http_response(200, req["body"])])
        self.addCleanup(up.stop)
        self.start({"http": {"upstream_tls": False}})
        self.dns.set(MEDIA, [up.ip])
        self.dns.delay = 1.0
        sock = h.open_client(self.proxy.port)
        self.addCleanup(sock.close)
        body = b"x" * 5000
        req = h.http_request("PUT", f"http://{MEDIA}/key", body=body,
                             headers=[("Connection", "close")])
        head_end = req.index(b"\r\n\r\n") + 4
        sock.sendall(req[:head_end])
        time.sleep(0.3)
        sock.sendall(req[head_end:])  # the body arrives while the lookup waits
        resp = h.read_head(sock, timeout=10)
        self.assertIsNotNone(resp)
        self.assertEqual(resp.status, 200, repr(resp))
        rest, _ = h.recv_until_eof(sock, timeout=5)
        self.assertEqual(resp.rest + rest, body)
        up.stop()  # its kept-alive connection leaves the pool as it closes
        self.assert_settled()


class AuthClientGoneTest(h.ProxyTestCase):
    # (d) the password is being verified (bcrypt, cost 15: about two seconds)
    def test_client_closes_while_its_password_is_verified(self):
        from test_auth import basic, make_hash
        t0 = time.monotonic()
        value = make_hash("bcrypt-2b", "slow pass", 15)
        cost = time.monotonic() - t0  # about what one verification costs the proxy
        if value is None:
            self.skipTest("no tool here makes a bcrypt hash")
        if cost < 1.2:
            self.skipTest(f"bcrypt cost 15 takes only {cost:.2f}s here: too fast to close during it")
        path = os.path.join(self.workdir, "users")
        with open(path, "w") as f:
            f.write(f"slow:{value}\n")
        self.start_proxy({"workers": 1, "auth": {"users_file": path}})
        sock = h.open_client(self.proxy.port)
        client = h.client_name(sock)
        sock.sendall(h.connect_request(f"{MEDIA}:{self.echo.port}",
                                       {"Proxy-Authorization": basic("slow", "slow pass")}))
        sent_at = time.monotonic()
        time.sleep(0.2)
        closed_at = time.monotonic()
        sock.close()
        rec = self.proxy.log_for_client(client, timeout=cost + 5.0)
        logged_after = time.monotonic() - closed_at
        text = self.metrics_text()
        self.assertLess(logged_after, min(1.0, cost / 2),
                        f"logged {logged_after:.2f}s after the close (bcrypt takes {cost:.2f}s): {rec}")
        # Nothing was decided: no verdict on the line, none counted, no identity
        # (the user was not verified).
        self.assert_log(rec, kind="connect", method="CONNECT", close="client_eof", status=0,
                        decision="deny", reason=None, upstream=None, bytes_up=0, bytes_down=0)
        self.assertNotIn("identity", rec)
        self.assertEqual(h.metric_value(text, "s3gate_connections_active"), 0, text)
        self.assertEqual(h.metric_value(text, "s3gate_auth_total", result="success"), 0,
                         "the verification ended before the client's close was noticed")
        # The verification runs to its end on its thread; its answer reaches nobody.
        time.sleep(max(0.0, sent_at + 1.5 * cost + 0.5 - time.monotonic()))
        self.assertEqual([r for r in self.proxy.access_lines() if r.get("client") == client],
                         [rec], "a second line for the client that left")
        text = self.metrics_text()
        for result in ("success", "failure", "cached", "missing"):
            self.assertEqual(h.metric_value(text, "s3gate_auth_total", result=result), 0, text)
        for decision in ("allow", "deny", "report"):
            self.assertEqual(h.metric_value(text, "s3gate_requests_total", kind="connect",
                                            decision=decision), 0, text)
        self.assert_settled()


if __name__ == "__main__":
    unittest.main()
