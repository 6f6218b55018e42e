"""Abuse that must not hurt the proxy, through the real binary.

- The admin port: a head fed a byte at a time is closed at its deadline from
  accept; connections beyond the cap are closed at once and the proxy keeps
  serving; the admin listener leaves the last descriptors to the proxy.
- tunnel.verify_sni: a mismatching ClientHello in the same packet as the
  CONNECT still gets the 200 head, then the close; an SSLv2-format hello and a
  handshake record with another version are TLS, not relayed unchecked.
- The upstream pool: a bodiless POST is not sent again when a kept-alive
  connection closes under it (not idempotent), a bodiless DELETE is.
"""

import contextlib
import os
import resource
import select
import socket
import ssl
import time
import unittest

import harness as h

MEDIA = h.s3_name("media")


ADMIN_CAP = 64  # AdminServer::kMaxConnections
ADMIN_HEAD_TIMEOUT = 10.0  # AdminServer::kHeadTimeout
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


def closed_by_peer(sock, timeout):
    """True when the peer closes (EOF or reset) within `timeout`; any data read is ignored."""
    data, how = h.recv_until_eof(sock, timeout)
    return how in ("eof", "reset"), data


def peer_closed_now(socks, timeout=0.05):
    """The sockets of `socks` whose peer has closed (readable, then EOF or reset)."""
    readable, _, _ = select.select(socks, [], [], timeout)
    gone = []
    for s in readable:
        try:
            s.setblocking(False)
            data = s.recv(65536, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            continue
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        finally:
            s.setblocking(True)
        if not data:
            gone.append(s)
    return gone


def admin_status(port, path, timeout=2.0):
    """The status of GET `path` on the admin port, or None when closed unanswered."""
    resp = h.http_get(port, path, timeout=timeout)
    return None if resp is None else resp.status


def client_hello(server_name):
    """The first bytes of a TLS handshake naming `server_name`."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16", hello[:8]
    return hello


class AdminAbuseTest(h.ProxyTestCase):

    def admin(self, timeout=10.0):
        s = socket.create_connection((h.LOOPBACK, self.admin_port), timeout=timeout)
        self.addCleanup(s.close)
        return s

    def restore_limit(self, soft, hard):
        with contextlib.suppress(OSError):
            resource.prlimit(self.proxy.pid, resource.RLIMIT_NOFILE, (soft, hard))

    def assert_proxy_serves(self):
        sock, resp = h.proxy_connect(self.proxy.port, f"{h.s3_name('media')}:{self.echo.port}")
        with sock:
            self.assertEqual(resp.status, 200, repr(resp))
            self.assertEqual(h.echo_roundtrip(sock, b"still serving"), b"still serving")

    def test_drip_fed_head_closed_at_its_deadline(self):
        # One byte every half second: an idle timer re-armed by every byte would
        # keep the connection for ever; the head's deadline runs from accept.
        self.start_proxy()
        s = self.admin()
        opened = time.monotonic()
        head = b"GET /metrics HTTP/1.1\r\nHost: admin\r\nX-Drip: " + b"a" * 200
        closed_at = None
        answer = b""
        for i in range(len(head)):
            if time.monotonic() - opened > ADMIN_HEAD_TIMEOUT + 6:
                break
            try:
                s.send(head[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic()
                break
            gone, data = closed_by_peer(s, 0.5)
            answer += data
            if gone:
                closed_at = time.monotonic()
                break
        self.assertIsNotNone(closed_at, "the drip-fed admin connection was still open after "
                                        f"{ADMIN_HEAD_TIMEOUT + 6} s")
        self.assertGreaterEqual(closed_at - opened, ADMIN_HEAD_TIMEOUT - 0.5)
        self.assertLess(closed_at - opened, ADMIN_HEAD_TIMEOUT + 3)
        self.assertEqual(answer, b"")
        self.assertEqual(h.http_get(self.admin_port, "/ping").status, 200)
        self.assert_settled()

    def test_connections_beyond_the_cap_closed_at_once(self):
        self.start_proxy()
        before = self.proxy.stable_fd_count()
        extra = 36
        held = [self.admin() for _ in range(ADMIN_CAP + extra)]
        # The connections past the cap are closed at once; ADMIN_CAP stay (for
        # their head's deadline, well after this test's checks).
        closed = []
        deadline = time.monotonic() + 3
        while len(closed) < extra and time.monotonic() < deadline:
            closed = peer_closed_now(held)
        time.sleep(0.2)
        closed = peer_closed_now(held)
        self.assertEqual(len(closed), extra)
        self.assertLessEqual(self.proxy.fd_count() - before, ADMIN_CAP)
        # A full admin port costs the proxy nothing.
        self.assert_proxy_serves()
        # While full, one more is closed without an answer...
        self.assertIsNone(h.http_get(self.admin_port, "/metrics", timeout=5))
        # ...and once they go, /metrics is answered again.
        for s in held:
            s.close()
        h.wait_until(lambda: admin_status(self.admin_port, "/metrics") == 200, 5,
                     message="/metrics answered after the held connections closed")
        self.assert_proxy_serves()
        self.assert_settled()

    def test_admin_leaves_the_last_descriptors_to_the_proxy(self):
        # With the process's descriptor limit lowered to a few dozen above what
        # it uses, admin connections stop being accepted before the proxy's
        # own accepts could fail with EMFILE.
        self.start_proxy()
        before = self.proxy.stable_fd_count()
        try:
            soft, hard = resource.prlimit(self.proxy.pid, resource.RLIMIT_NOFILE)
            limit = before + 60
            resource.prlimit(self.proxy.pid, resource.RLIMIT_NOFILE, (limit, hard))
        except (PermissionError, OSError) as exc:
            self.skipTest(f"cannot change s3gate's RLIMIT_NOFILE: {exc}")
        self.addCleanup(self.restore_limit, soft, hard)
        # Fewer than the cap: only the reserve can refuse some of them.
        held = [self.admin() for _ in range(60)]
        h.wait_until(lambda: len(peer_closed_now(held)) > 0, 5,
                     message="an admin connection refused near the descriptor limit")
        time.sleep(0.2)
        self.assertGreater(len(peer_closed_now(held)), 0)
        self.assertLessEqual(self.proxy.fd_count(), limit - 6)
        # The proxy still has descriptors for a tunnel (two each) and more.
        socks = []
        try:
            for _ in range(3):
                sock, resp = h.proxy_connect(self.proxy.port,
                                             f"{h.s3_name('media')}:{self.echo.port}")
                socks.append(sock)
                self.assertEqual(resp.status, 200, repr(resp))
                self.assertEqual(h.echo_roundtrip(sock, b"x"), b"x")
        finally:
            for sock in socks:
                sock.close()
        for s in held:
            s.close()
        resource.prlimit(self.proxy.pid, resource.RLIMIT_NOFILE, (soft, hard))
        h.wait_until(lambda: admin_status(self.admin_port, "/ping") == 200, 5,
                     message="/ping answered again")
        self.assert_proxy_serves()


class SniFirstBytesTest(h.ProxyTestCase):
    """tunnel.verify_sni: true; the tunnel's first client bytes."""

    def check_denied(self, first_bytes, same_packet):
        self.start_proxy({"tunnel": {"verify_sni": True}})
        before = len(self.tls.connections)
        sock = h.open_client(self.proxy.port)
        self.addCleanup(sock.close)
        client = h.client_name(sock)
        connect = h.connect_request(f"{h.s3_name('media')}:{self.tls.port}")
        if same_packet:
            sock.sendall(connect + first_bytes)
        else:
            sock.sendall(connect)
            resp = h.read_head(sock, 10)
            self.assertEqual(resp.status, 200, repr(resp))
            self.assertEqual(resp.rest, b"")
            sock.sendall(first_bytes)
        data, how = h.recv_until_eof(sock, 10)
        self.assertIn(how, ("eof", "reset"))
        if same_packet:
            self.assertEqual(data, ESTABLISHED, "the 200 head, whole, then the close")
        else:
            self.assertEqual(data, b"")
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, decision="deny", reason="sni_mismatch", status=200)
        # No ClientHello reached the upstream.
        for r in self.tls.connections[before:]:
            self.assertIsNone(r.get("sni"))
        self.assert_settled()

    def test_mismatching_hello_in_the_connect_packet_gets_the_200_first(self):
        self.check_denied(client_hello(h.s3_name("secret")), same_packet=True)

    def test_hello_without_server_name_in_the_connect_packet_gets_the_200_first(self):
        self.check_denied(client_hello(None), same_packet=True)

    def test_handshake_record_of_another_version_is_checked(self):
        hello = bytearray(client_hello(h.s3_name("secret")))
        hello[1:3] = b"\x02\x00"  # record version 2.0: still a handshake record
        self.check_denied(bytes(hello), same_packet=False)

    def test_sslv2_format_hello_is_checked(self):
        body = b"\x01\x03\x01\x00\x03\x00\x00\x00\x10" + b"\x00\x00\x2f" + b"\x42" * 16
        self.check_denied(bytes([0x80, len(body)]) + body, same_packet=False)

    def test_plain_text_is_still_relayed(self):
        self.start_proxy({"tunnel": {"verify_sni": True}})
        sock = h.open_client(self.proxy.port)
        self.addCleanup(sock.close)
        sock.sendall(h.connect_request(f"{h.s3_name('media')}:{self.echo.port}") +
                     b"GET / HTTP/1.1\r\n\r\n")
        resp = h.read_head(sock, 10)
        self.assertEqual(resp.status, 200, repr(resp))
        got = resp.rest
        deadline = time.monotonic() + 5
        while len(got) < 18 and time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            with contextlib.suppress(socket.timeout):
                got += sock.recv(100)
        self.assertEqual(got, b"GET / HTTP/1.1\r\n\r\n")


class ResendTest(h.ForwardTestCase):
    """A request that met a kept-alive connection closing under it goes again
    only when it has no body and is idempotent (RFC 9110 section 9.2.2)."""

    def exchange(self, method, path):
        # The upstream answers the first request of each connection and closes
        # the connection silently on the second.
        up = self.upstream(responder=lambda req: ["close"] if req["index"] >= 1
                           else [h.http_response(200, b"ok:" + req["target"].encode())])
        self.start_forward(up, {"workers": 1})
        c = self.client()
        c.send(h.http_request("GET", f"http://{MEDIA}/a"))
        self.assertEqual(c.read_response().body, b"ok:/a")
        c.send(h.http_request(method, f"http://{MEDIA}{path}", length=0))
        reply = c.read_response(method=method)
        return up, reply

    def test_bodiless_post_is_not_sent_again(self):
        up, reply = self.exchange("POST", "/b?delete")
        self.assertEqual(reply.status, 502, reply.head)
        self.assertEqual([r["target"] for r in up.requests].count("/b?delete"), 1)

    def test_bodiless_delete_is_sent_again(self):
        up, reply = self.exchange("DELETE", "/b")
        self.assertEqual((reply.status, reply.body), (200, b"ok:/b"), reply.head)
        self.assertEqual([(r["conn"], r["target"]) for r in up.requests],
                         [(0, "/a"), (0, "/b"), (1, "/b")])


if __name__ == "__main__":
    unittest.main()


class PartialProxyHeaderTest(h.ProxyTestCase):
    def test_partial_proxy_headers_cost_no_cpu_while_they_wait(self):
        # With trusted_proxies empty any peer may start a PROXY header; one that
        # stops half-way must be waited for, not polled.
        cfg = self.config({"limits": {"header_timeout": "10s"}})
        cfg["listeners"][0]["proxy_protocol"] = True
        self.start_proxy(config=cfg)
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(200):
            s = h.open_client(self.proxy.port)
            s.sendall(b"PROXY TCP4 127.0.0.5 ")
            socks.append(s)
        time.sleep(0.5)
        with open(f"/proc/{self.proxy.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        before = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        time.sleep(3)
        with open(f"/proc/{self.proxy.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        spent = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") - before
        self.assertLess(spent, 0.2, f"{spent:.2f} CPU-s in 3 s for 200 waiting PROXY headers")
        # The rest of a header still completes it.
        socks[0].sendall(b"127.0.0.1 5000 3128\r\n" +
                         h.connect_request(f"{h.s3_name('media')}:{self.echo.port}"))
        resp = h.read_head(socks[0])
        self.assertEqual(resp.status, 200, resp)
