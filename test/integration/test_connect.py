"""CONNECT tunnels through a real s3gate: relaying, byte counts, half-close,
idle timeout, vanishing clients, TLS through the tunnel (curl), SNI checks."""

import hashlib
import shutil
import socket
import ssl
import subprocess
import time
import unittest

import harness as h

BIG = 100 << 20  # 100 MiB
BIG_TIMEOUT = 90.0  # seconds allowed for one 100 MiB direction (sanitizer builds on 2 cores)


class ConnectTest(h.ProxyTestCase):
    def target(self, port, bucket="media"):
        return f"{h.s3_name(bucket)}:{port}"

    def open_tunnel(self, port, bucket="media"):
        """CONNECT and check the 200. Upstream bytes that came with the head are
        left in self.early (a source upstream talks first)."""
        sock, resp = h.proxy_connect(self.proxy.port, self.target(port, bucket))
        self.addCleanup(sock.close)
        self.assertEqual(resp.status, 200, repr(resp))
        self.assertEqual(resp.raw_head.split(b"\r\n")[0], b"HTTP/1.1 200 Connection established")
        self.early = resp.rest
        if port in (self.echo.port, self.sink.port):
            self.assertEqual(resp.rest, b"", "bytes after the 200 head before any upstream byte")
        return sock

    def test_allowed_connect_echo(self):
        self.start_proxy()
        t0 = time.monotonic()
        sock = self.open_tunnel(self.echo.port)
        client = h.client_name(sock)
        payload = b"hello through s3gate\n" * 100
        self.assertEqual(h.echo_roundtrip(sock, payload), payload)
        self.assertEqual(h.echo_roundtrip(sock, b"again"), b"again")
        sock.shutdown(socket.SHUT_WR)
        rest, how = h.recv_until_eof(sock, 5)
        self.assertEqual((rest, how), (b"", "eof"))
        sock.close()
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, kind="connect", method="CONNECT", host=h.s3_name("media"),
                        port=self.echo.port, bucket="media", rule="media", decision="allow",
                        reason=None, status=200, upstream=f"127.0.0.1:{self.echo.port}",
                        bytes_up=len(payload) + 5, bytes_down=len(payload) + 5, close="client_eof")
        # the tunnel lasted no longer than this test took to open, use and close it
        self.assertLessEqual(rec["duration_ms"], (time.monotonic() - t0) * 1000 + 5, rec)
        self.assert_settled()

    def test_read_only_bucket_rule_allows_tunnel(self):
        # In a blind tunnel a read-only rule is a rule on the name (SPEC section 3).
        self.start_proxy()
        sock = self.open_tunnel(self.echo.port, bucket="ro-archive")
        client = h.client_name(sock)
        self.assertEqual(h.echo_roundtrip(sock, b"x"), b"x")
        sock.close()
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, decision="allow", bucket="ro-archive", rule="ro-*", status=200)
        self.assert_settled()

    def test_100mib_upstream_to_client(self):
        source = h.SourceServer(BIG)
        self.addCleanup(source.stop)
        self.upstream_ports = self.upstream_ports + [source.port]
        self.start_proxy()
        sock = self.open_tunnel(source.port)
        client = h.client_name(sock)
        digest = hashlib.sha256(self.early)
        total = len(self.early)
        deadline = time.monotonic() + BIG_TIMEOUT
        for _ in range(BIG):  # bounded: at least one byte per pass, and the deadline
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, f"only {total} of {BIG} bytes within {BIG_TIMEOUT}s")
            sock.settimeout(left)
            data = sock.recv(1 << 20)
            if not data:
                break
            digest.update(data)
            total += len(data)
        self.assertEqual(total, BIG)
        self.assertEqual(digest.hexdigest(), h.pattern_sha256(BIG))
        sock.shutdown(socket.SHUT_WR)
        sock.close()
        rec = source.wait_done(timeout=10)[0]
        self.assertTrue(rec["eof_seen"])
        log = self.proxy.log_for_client(client)
        self.assert_log(log, decision="allow", status=200, bytes_up=0, bytes_down=BIG,
                        close="upstream_eof")
        self.assert_settled()

    def test_100mib_client_to_upstream(self):
        self.start_proxy()
        before = len(self.sink.connections)
        sock = self.open_tunnel(self.sink.port)
        client = h.client_name(sock)
        sent = 0
        t0 = time.monotonic()
        sock.settimeout(BIG_TIMEOUT)
        for chunk in h.pattern_chunks(BIG):
            sock.sendall(chunk)
            sent += len(chunk)
            self.assertLess(time.monotonic() - t0, BIG_TIMEOUT, f"only {sent} bytes sent")
        sock.shutdown(socket.SHUT_WR)
        reply, how = h.recv_until_eof(sock, BIG_TIMEOUT)
        self.assertEqual(how, "eof")
        self.assertEqual(reply.decode(), f"{h.pattern_sha256(BIG)} {BIG}\n")
        sock.close()
        self.assertEqual(len(self.sink.connections), before + 1)
        log = self.proxy.log_for_client(client)
        self.assert_log(log, decision="allow", status=200, bytes_up=BIG, bytes_down=len(reply))
        self.assert_settled()

    def test_half_close_is_passed_on(self):
        self.start_proxy()
        sock = self.open_tunnel(self.sink.port)
        client = h.client_name(sock)
        sock.sendall(b"hello")
        sock.shutdown(socket.SHUT_WR)  # the sink answers only after it sees EOF
        reply, how = h.recv_until_eof(sock, 5)
        self.assertEqual(how, "eof")
        self.assertEqual(reply.decode(), f"{hashlib.sha256(b'hello').hexdigest()} 5\n")
        sock.close()
        log = self.proxy.log_for_client(client)
        self.assert_log(log, decision="allow", status=200, bytes_up=5, bytes_down=len(reply),
                        close="client_eof")
        self.assert_settled()

    def test_upstream_half_close_then_client_talks(self):
        # The source sends 1 MiB and half-closes; the client still sends afterwards.
        self.start_proxy()
        n = len(self.source.connections)
        sock = self.open_tunnel(self.source.port)
        client = h.client_name(sock)
        data, how = h.recv_until_eof(sock, 10, limit=1 << 30)
        self.assertEqual(how, "eof")
        data = self.early + data
        self.assertEqual(hashlib.sha256(data).hexdigest(), h.pattern_sha256(self.source.size))
        sock.sendall(b"still here")
        sock.shutdown(socket.SHUT_WR)
        sock.close()
        h.wait_until(lambda: len(self.source.connections) > n and self.source.connections[n]["done"],
                     10, message="the source connection to finish")
        self.assertEqual(self.source.connections[n]["bytes_in"], 10)
        self.assertTrue(self.source.connections[n]["eof_seen"])
        log = self.proxy.log_for_client(client)
        self.assert_log(log, bytes_up=10, bytes_down=self.source.size, close="upstream_eof")
        self.assert_settled()

    def test_idle_timeout_closes_tunnel(self):
        self.start_proxy({"limits": {"idle_timeout": "1s"}})
        sock = self.open_tunnel(self.echo.port)
        client = h.client_name(sock)
        self.assertEqual(h.echo_roundtrip(sock, b"abc"), b"abc")
        t0 = time.monotonic()
        rest, how = h.recv_until_eof(sock, 10)
        elapsed = time.monotonic() - t0
        self.assertIn(how, ("eof", "reset"))
        self.assertEqual(rest, b"")
        self.assertGreaterEqual(elapsed, 0.8, "closed before idle_timeout")
        self.assertLess(elapsed, 5.0, "idle tunnel not closed within idle_timeout + slack")
        log = self.proxy.log_for_client(client)
        self.assertIn("idle", log["close"])
        self.assert_log(log, decision="allow", status=200, bytes_up=3, bytes_down=3)
        self.assert_settled()

    def test_traffic_keeps_tunnel_open_past_idle_timeout(self):
        self.start_proxy({"limits": {"idle_timeout": "1s"}})
        sock = self.open_tunnel(self.echo.port)
        for i in range(6):  # 6 x 0.4 s = 2.4 s, longer than idle_timeout
            self.assertEqual(h.echo_roundtrip(sock, b"%d" % i), b"%d" % i)
            time.sleep(0.4)
        sock.close()
        self.assert_settled()

    def test_client_vanishes_mid_tunnel(self):
        self.start_proxy()
        # Echo: the client resets while idle.
        for _ in range(3):
            sock = self.open_tunnel(self.echo.port)
            client = h.client_name(sock)
            self.assertEqual(h.echo_roundtrip(sock, b"data"), b"data")
            h.rst_close(sock)
            rec = self.proxy.log_for_client(client)
            self.assert_log(rec, decision="allow", status=200, bytes_up=4, bytes_down=4)
            self.assert_settled()

    def test_client_vanishes_while_upstream_sends(self):
        source = h.SourceServer(64 << 20)
        self.addCleanup(source.stop)
        self.upstream_ports = self.upstream_ports + [source.port]
        self.start_proxy()
        sock = self.open_tunnel(source.port)
        client = h.client_name(sock)
        got = len(self.early)
        for _ in range(100):  # read a little, so the relay is mid-stream and backpressured
            data = sock.recv(65536)
            self.assertTrue(data)
            got += len(data)
            if got >= 1 << 20:
                break
        h.rst_close(sock)
        rec = self.proxy.log_for_client(client, timeout=10)
        self.assert_log(rec, decision="allow", status=200)
        self.assertGreaterEqual(rec["bytes_down"], got)
        self.assertLess(rec["bytes_down"], 64 << 20)
        source.wait_done(timeout=10)
        self.assert_settled()

    def test_upstream_resets_mid_tunnel(self):
        rst = _ResetServer()
        self.addCleanup(rst.stop)
        self.upstream_ports = self.upstream_ports + [rst.port]
        self.start_proxy()
        sock = self.open_tunnel(rst.port)
        client = h.client_name(sock)
        sock.sendall(b"trigger")
        rest, how = h.recv_until_eof(sock, 10)
        self.assertIn(how, ("eof", "reset"))
        sock.close()
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, decision="allow", status=200, bytes_up=7)
        self.assert_settled()

    def test_many_tunnels_at_once(self):
        self.start_proxy()
        socks = [self.open_tunnel(self.echo.port) for _ in range(50)]
        for i, s in enumerate(socks):
            self.assertEqual(h.echo_roundtrip(s, b"n%d" % i), b"n%d" % i)
        names = [h.client_name(s) for s in socks]
        for s in socks:
            s.close()
        for n in names:
            self.proxy.log_for_client(n)
        self.assert_settled()

    def test_pipelined_bytes_after_connect_head_are_relayed(self):
        # A client that sends its first tunnel bytes in the same packet as CONNECT.
        self.start_proxy()
        sock = h.open_client(self.proxy.port)
        self.addCleanup(sock.close)
        client = h.client_name(sock)
        sock.sendall(h.connect_request(self.target(self.echo.port)) + b"early")
        resp = h.read_head(sock)
        self.assertEqual(resp.status, 200)
        got = resp.rest
        deadline = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < deadline:
            got += sock.recv(100)
        self.assertEqual(got, b"early")
        sock.close()
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, bytes_up=5, bytes_down=5)
        self.assert_settled()

    @unittest.skipIf(shutil.which("curl") is None, "curl not on PATH")
    def test_curl_https_through_tunnel(self):
        self.start_proxy()
        before = len(self.tls.connections)
        url = f"https://{h.s3_name('media')}:{self.tls.port}/"
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "--proxy", f"http://127.0.0.1:{self.proxy.port}",
             "--cacert", self.pki.ca_file, url],
            capture_output=True, timeout=30, env=h.clean_env())
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        self.assertEqual(out.stdout, h.TlsHttpServer.BODY)
        self.assertEqual(self.tls.connections[before]["sni"], h.s3_name("media"))
        rec = self.proxy.wait_for_log(lambda r: r.get("port") == self.tls.port)
        self.assert_log(rec, kind="connect", decision="allow", status=200, bucket="media")
        self.assertGreater(rec["bytes_up"], 0)
        self.assertGreater(rec["bytes_down"], len(h.TlsHttpServer.BODY))
        self.assert_settled()

    @unittest.skipIf(shutil.which("curl") is None, "curl not on PATH")
    def test_curl_denied_bucket_fails(self):
        self.start_proxy()
        url = f"https://{h.s3_name('secret')}:{self.tls.port}/"
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "--proxy", f"http://127.0.0.1:{self.proxy.port}",
             "--cacert", self.pki.ca_file, url],
            capture_output=True, timeout=30, env=h.clean_env())
        self.assertNotEqual(out.returncode, 0)
        self.assertIn(b"403", out.stderr)
        rec = self.proxy.wait_for_log(lambda r: r.get("host") == h.s3_name("secret"))
        self.assert_log(rec, decision="deny", reason="bucket_not_allowed", status=403)
        self.assert_settled()


class SniTest(h.ProxyTestCase):
    """tunnel.verify_sni: true."""

    def start(self):
        return self.start_proxy({"tunnel": {"verify_sni": True}})

    def tls_through(self, connect_host, sni):
        sock, resp = h.proxy_connect(self.proxy.port, f"{connect_host}:{self.tls.port}")
        self.addCleanup(sock.close)
        self.assertEqual(resp.status, 200, repr(resp))
        client = h.client_name(sock)
        ctx = self.pki.client_context()
        if sni is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        sock.settimeout(10)
        tls = ctx.wrap_socket(sock, server_hostname=sni, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data, _ = h.recv_until_eof(tls, 10)
            return client, data
        except (ssl.SSLError, OSError) as exc:
            return client, exc
        finally:
            tls.close()

    def test_matching_sni_passes(self):
        self.start()
        client, data = self.tls_through(h.s3_name("media"), h.s3_name("media"))
        self.assertIsInstance(data, bytes, f"TLS through the tunnel failed: {data!r}")
        self.assertTrue(data.endswith(h.TlsHttpServer.BODY), data)
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, decision="allow", reason=None, status=200)
        self.assert_settled()

    def test_mismatched_sni_closes_tunnel(self):
        self.start()
        before = len(self.tls.connections)
        client, result = self.tls_through(h.s3_name("media"), h.s3_name("secret"))
        self.assertNotIsInstance(result, bytes, "a tunnel with another SNI was relayed")
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, decision="deny", reason="sni_mismatch", status=200)
        # No ClientHello byte may have reached the upstream.
        for r in self.tls.connections[before:]:
            self.assertEqual(r.get("sni"), None)
        self.assert_settled()

    def test_missing_sni_closes_tunnel(self):
        self.start()
        client, result = self.tls_through(h.s3_name("media"), None)
        self.assertNotIsInstance(result, bytes, "a tunnel without SNI was relayed")
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, decision="deny", reason="sni_mismatch", status=200)
        self.assert_settled()

    def test_non_tls_bytes_are_relayed(self):
        self.start()
        sock, resp = h.proxy_connect(self.proxy.port, f"{h.s3_name('media')}:{self.echo.port}")
        self.addCleanup(sock.close)
        self.assertEqual(resp.status, 200)
        self.assertEqual(h.echo_roundtrip(sock, b"plain bytes, not TLS"), b"plain bytes, not TLS")
        sock.close()
        self.assert_settled()


class _ResetServer(h._TcpServer):
    """Reads a few bytes, then resets the connection."""

    name = "reset"

    def handle(self, conn, record):
        data = conn.recv(100)
        record["bytes_in"] = len(data)
        h.rst_close(conn)


if __name__ == "__main__":
    unittest.main()
