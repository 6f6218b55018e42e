"""s3gate's own DNS (c-ares) against our DNS server: failures, timeouts, the
address rules, pins and the cache."""

import time
import unittest

import harness as h

MEDIA = h.s3_name("media")


class DnsTest(h.ProxyTestCase):
    def tunnel_ok(self, host, port=None):
        """CONNECT, echo a few bytes, close; returns the access-log record."""
        port = port or self.echo.port
        sock, resp = h.proxy_connect(self.proxy.port, f"{host}:{port}")
        self.addCleanup(sock.close)
        self.assertEqual(resp.status, 200, repr(resp))
        self.assertEqual(h.echo_roundtrip(sock, b"dns"), b"dns")
        client = h.client_name(sock)
        sock.close()
        return self.proxy.log_for_client(client)

    def connect_fails(self, host, status, error, details, decision, port=None, timeout=10.0):
        port = port or self.echo.port
        sock, resp = h.proxy_connect(self.proxy.port, f"{host}:{port}", timeout=timeout)
        client = h.client_name(sock)
        sock.close()
        self.assert_error(resp, status, error, details)
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, kind="connect", decision=decision, reason=details, status=status,
                        bytes_up=0, bytes_down=0)
        self.assert_settled()
        return rec

    def test_resolved_through_configured_server(self):
        self.start_proxy()
        self.dns.set(MEDIA, ["127.0.0.1"])
        rec = self.tunnel_ok(MEDIA)
        self.assertEqual(rec["upstream"], f"127.0.0.1:{self.echo.port}")
        self.assertGreaterEqual(self.dns.query_count(MEDIA), 1)
        self.assert_settled()

    def test_servfail_is_dns_failed(self):
        self.start_proxy()
        self.dns.set_failure(MEDIA, "servfail")
        self.connect_fails(MEDIA, 502, "dns_error", "dns_failed", "allow")
        self.assertGreaterEqual(self.dns.query_count(MEDIA), 1)

    def test_nxdomain_is_dns_failed(self):
        self.start_proxy()
        self.dns.set_failure(MEDIA, "nxdomain")
        self.connect_fails(MEDIA, 502, "dns_error", "dns_failed", "allow")

    def test_silence_is_dns_timeout(self):
        self.start_proxy()
        self.dns.set_failure(MEDIA, "drop")
        t0 = time.monotonic()
        self.connect_fails(MEDIA, 504, "dns_timeout", "dns_timeout", "allow")
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 0.4, "answered before dns.timeout")
        self.assertLess(elapsed, 8.0)

    def test_answer_outside_allowed_networks(self):
        self.start_proxy()
        self.dns.set(MEDIA, ["10.9.9.9"])
        self.connect_fails(MEDIA, 403, "destination_ip_prohibited", "dns_pin_violation", "deny")

    def test_loopback_answer_denied_without_allowed_networks(self):
        self.start_proxy({"dns": {"allowed_networks": []}})
        self.dns.set(MEDIA, ["127.0.0.1"])
        self.connect_fails(MEDIA, 403, "destination_ip_prohibited", "dns_pin_violation", "deny")

    def test_metadata_address_denied(self):
        self.start_proxy({"dns": {"allowed_networks": []}})
        self.dns.set(MEDIA, ["169.254.169.254"])
        self.connect_fails(MEDIA, 403, "destination_ip_prohibited", "dns_pin_violation", "deny")

    def test_mixed_answer_uses_only_allowed_address(self):
        # 10.9.9.9 is outside allowed_networks: it must be dropped, 127.0.0.1 used.
        self.start_proxy()
        self.dns.set(MEDIA, ["10.9.9.9", "127.0.0.1"])
        rec = self.tunnel_ok(MEDIA)
        self.assertEqual(rec["upstream"], f"127.0.0.1:{self.echo.port}")
        self.assert_settled()

    def test_addresses_tried_in_turn(self):
        # 127.0.0.2 refuses (nothing listens there on this port), 127.0.0.1 answers.
        self.start_proxy()
        self.dns.set(MEDIA, ["127.0.0.2", "127.0.0.1"])
        rec = self.tunnel_ok(MEDIA)
        self.assertEqual(rec["upstream"], f"127.0.0.1:{self.echo.port}")
        self.assert_settled()

    def test_pinned_host_needs_no_dns(self):
        self.start_proxy({"dns": {"pins": [{"host": "*.s3.us-west-2.amazonaws.com",
                                            "addresses": ["127.0.0.1"]}]}})
        self.dns.set_failure(MEDIA, "servfail")  # would fail if asked
        rec = self.tunnel_ok(MEDIA)
        self.assertEqual(rec["upstream"], f"127.0.0.1:{self.echo.port}")
        self.assertEqual(self.dns.query_count(), 0, f"DNS was asked: {self.dns.counts()}")
        self.assert_settled()

    def test_pin_exact_name(self):
        self.start_proxy({"dns": {"pins": [{"host": MEDIA, "addresses": ["127.0.0.1"]}]}})
        self.tunnel_ok(MEDIA)
        self.assertEqual(self.dns.query_count(MEDIA), 0)
        self.assert_settled()

    def test_cache_two_connects_one_query(self):
        # The cache is per worker (proxy/resolver.h); one worker makes the count exact.
        self.start_proxy({"workers": 1})
        self.dns.set(MEDIA, ["127.0.0.1"], ttl=60)
        self.tunnel_ok(MEDIA)
        first = self.dns.counts()
        self.assertGreaterEqual(self.dns.query_count(MEDIA, qtype=h.DnsServer.QTYPE_A), 1)
        self.tunnel_ok(MEDIA)
        self.assertEqual(self.dns.counts(), first, "the second CONNECT within the TTL asked DNS again")
        self.assertEqual(self.dns.query_count(MEDIA, qtype=h.DnsServer.QTYPE_A), 1)
        self.assert_settled()

    def test_cache_expires_at_min_ttl(self):
        # The answer's TTL (1 s) is clamped up to min_ttl (1 s here); after it a new query is made.
        self.start_proxy({"workers": 1, "dns": {"min_ttl": "1s"}})
        self.dns.set(MEDIA, ["127.0.0.1"], ttl=1)
        self.tunnel_ok(MEDIA)
        n = self.dns.query_count(MEDIA, qtype=h.DnsServer.QTYPE_A)
        time.sleep(2.0)
        self.tunnel_ok(MEDIA)
        self.assertGreater(self.dns.query_count(MEDIA, qtype=h.DnsServer.QTYPE_A), n)
        self.assert_settled()

    def test_concurrent_lookups_of_one_name(self):
        self.start_proxy({"workers": 1})
        self.dns.set(MEDIA, ["127.0.0.1"], ttl=60)
        socks = []
        for _ in range(10):
            s = h.open_client(self.proxy.port)
            self.addCleanup(s.close)
            s.sendall(h.connect_request(f"{MEDIA}:{self.echo.port}"))
            socks.append(s)
        for s in socks:
            resp = h.read_head(s)
            self.assertEqual(resp.status, 200, repr(resp))
            s.close()
        self.assertLessEqual(self.dns.query_count(MEDIA, qtype=h.DnsServer.QTYPE_A), 1,
                             "concurrent lookups of one name were not coalesced")
        self.assert_settled()

    def test_dns_failure_does_not_stick_past_negative_ttl(self):
        self.start_proxy({"workers": 1, "dns": {"negative_ttl": "1s", "min_ttl": "1s"}})
        self.dns.set_failure(MEDIA, "servfail")
        sock, resp = h.proxy_connect(self.proxy.port, f"{MEDIA}:{self.echo.port}")
        sock.close()
        self.assertEqual(resp.status, 502)
        self.dns.set(MEDIA, ["127.0.0.1"])
        time.sleep(1.5)
        self.tunnel_ok(MEDIA)
        self.assert_settled()


if __name__ == "__main__":
    unittest.main()
