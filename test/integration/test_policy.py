"""The S3-aware policy through the real binary: pins, the address rules (the
metadata address, DNS rebinding), the SNI check with openssl s_client, report
mode, the S3 service names that are not bucket endpoints (access points,
Transfer Acceleration, ...), and `s3gate explain`.

    S3GATE_BIN=../../build/s3gate python3 -m unittest -v test_policy

Tests that need openssl, or unshare(1) and ip(8) for a private network
namespace, are skipped with the reason printed when those are missing.
"""

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import harness as h

MEDIA = h.s3_name("media")
SECRET = h.s3_name("secret")
ACCESS_POINT = "media-111122223333.s3-accesspoint.us-west-2.amazonaws.com"
ACCELERATE = "media.s3-accelerate.amazonaws.com"
MRAP = "mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com"
METADATA = "169.254.169.254"
FORBIDDEN = "127.0.0.2"  # the rebinding target: loopback, but outside allowed_networks below


def skip(reason):
    print(f"SKIP: {reason}", file=sys.stderr)
    raise unittest.SkipTest(reason)


# ---------------------------------------------------------------------------
# helpers of this file


class FlippingDns(h.DnsServer):
    """The harness's DNS server, plus a rebinding mode: flip(name, first, then) answers
    the first A query for `name` with `first` and every later one with `then`, all
    with TTL 0."""

    def __init__(self, *args, **kw):
        self._flip = None
        super().__init__(*args, **kw)

    def flip(self, name, first, then):
        with self._lock:
            self._flip = (self._norm(name), list(then))
        self.set(name, first, ttl=0)

    def clear(self):
        with self._lock:
            self._flip = None
        super().clear()

    def _handle(self, packet):
        reply = super()._handle(packet)
        try:
            raw_name, end = self.parse_name(packet, 12)
            qtype = struct.unpack("!H", packet[end:end + 2])[0]
        except (ValueError, IndexError, struct.error):
            return reply
        with self._lock:
            flip = self._flip
        if flip is not None and qtype == self.QTYPE_A and self._norm(raw_name) == flip[0]:
            self.set(flip[0], flip[1], ttl=0)  # from now on: the other address
        return reply


_METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(admin_port):
    """The admin /metrics as {(name, frozenset(labels.items())): value}."""
    resp = h.http_get(admin_port, "/metrics")
    assert resp is not None and resp.status == 200, repr(resp)
    out = {}
    for line in resp.body.decode("utf-8", "replace").splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line)
        if m:
            labels = frozenset(_LABEL.findall(m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(samples, name, **labels):
    """A sample's value; 0 when the series is not there (not counted yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def openssl_missing():
    if shutil.which("openssl") is None:
        return "openssl is not installed"
    r = subprocess.run(["openssl", "s_client", "-help"], capture_output=True, text=True, timeout=10,
                       stdin=subprocess.DEVNULL)
    if "-proxy" not in (r.stdout + r.stderr):
        return "this openssl s_client has no -proxy option"
    return None


def namespace_missing():
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "ip", "link", "set", "lo",
                        "up"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        return f"no unprivileged network namespace here ({r.stderr.strip()[:200]})"
    return None


class PolicyTestCase(h.ProxyTestCase):
    """ProxyTestCase with a DNS server that can flip its answer, and the
    helpers of this file."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dns.stop()
        cls.dns = FlippingDns()

    def metrics(self):
        return scrape(self.admin_port)

    def tunnel_ok(self, host, port=None):
        """CONNECT, echo a few bytes, close; returns the access-log record."""
        port = port or self.echo.port
        sock, resp = h.proxy_connect(self.proxy.port, f"{host}:{port}")
        self.addCleanup(sock.close)
        self.assertEqual(resp.status, 200, repr(resp))
        self.assertEqual(h.echo_roundtrip(sock, b"policy"), b"policy")
        client = h.client_name(sock)
        sock.close()
        return self.proxy.log_for_client(client)

    def connect_denied(self, host, status, error, details, port=None):
        """CONNECT that must be answered with an error; returns (body, log record)."""
        port = port or self.echo.port
        sock, resp = h.proxy_connect(self.proxy.port, f"{host}:{port}")
        client = h.client_name(sock)
        sock.close()
        body = self.assert_error(resp, status, error, details)
        rec = self.proxy.log_for_client(client)
        return body, rec


# ---------------------------------------------------------------------------
# pins and the address rules


class AddressRulesTest(PolicyTestCase):
    def test_pinned_name_asks_no_dns(self):
        self.start_proxy({"dns": {"pins": [{"host": "*.s3.us-west-2.amazonaws.com",
                                            "addresses": ["127.0.0.1"]}]}})
        self.dns.set_failure(MEDIA, "servfail")  # would fail the tunnel if asked
        rec = self.tunnel_ok(MEDIA)
        self.assert_log(rec, decision="allow", upstream=f"127.0.0.1:{self.echo.port}")
        self.assertEqual(self.dns.query_count(), 0, f"DNS was asked: {self.dns.counts()}")
        self.assertEqual(metric(self.metrics(), "s3gate_dns_lookups_total", result="pinned"), 1)
        self.assert_settled()

    def test_pinned_address_is_used_as_it_is(self):
        # SPEC: a pinned address is not held to allowed_networks or the special ranges.
        self.start_proxy({"dns": {"allowed_networks": ["10.0.0.0/8"],
                                  "pins": [{"host": MEDIA, "addresses": ["127.0.0.1"]}]}})
        rec = self.tunnel_ok(MEDIA)
        self.assert_log(rec, upstream=f"127.0.0.1:{self.echo.port}")
        self.assertEqual(self.dns.query_count(), 0)
        self.assert_settled()

    def test_answer_outside_allowed_networks_is_refused(self):
        self.start_proxy({"dns": {"allowed_networks": ["127.0.0.2/32"]}})
        self.dns.set(MEDIA, ["127.0.0.1"])
        before = len(self.echo.connections)
        body, rec = self.connect_denied(MEDIA, 403, "destination_ip_prohibited", "dns_pin_violation")
        self.assert_log(rec, decision="deny", reason="dns_pin_violation", status=403,
                        bytes_up=0, bytes_down=0)
        self.assertIn(MEDIA, body)
        self.assertGreaterEqual(self.dns.query_count(MEDIA), 1)
        self.assertEqual(len(self.echo.connections), before, "connected to a refused address")
        self.assertEqual(metric(self.metrics(), "s3gate_denied_total", reason="dns_pin_violation"), 1)
        self.assert_settled()

    def test_metadata_answer_refused(self):
        # Nothing is connected to: the refusal comes before any connect.
        self.start_proxy({"dns": {"allowed_networks": []}})
        self.dns.set(MEDIA, [METADATA])
        _, rec = self.connect_denied(MEDIA, 403, "destination_ip_prohibited", "dns_pin_violation")
        self.assert_log(rec, decision="deny", reason="dns_pin_violation", upstream=None)
        self.assert_settled()

    def test_metadata_answer_refused_in_report_mode(self):
        # The address rules hold in every mode.
        self.start_proxy({"mode": "report", "dns": {"allowed_networks": []}})
        self.dns.set(SECRET, [METADATA])
        _, rec = self.connect_denied(SECRET, 403, "destination_ip_prohibited", "dns_pin_violation")
        self.assert_log(rec, decision="deny", reason="dns_pin_violation")
        self.assert_settled()

    def test_metadata_answer_refused_beside_an_allowed_network(self):
        # allowed_networks that do not contain it do not make it usable either.
        self.start_proxy({"dns": {"allowed_networks": ["127.0.0.0/8", "10.0.0.0/8"]}})
        self.dns.set(MEDIA, [METADATA])
        self.connect_denied(MEDIA, 403, "destination_ip_prohibited", "dns_pin_violation")
        self.assert_settled()

    def test_metadata_answer_allowed_when_allowed_networks_names_it(self):
        # Connecting to 169.254.169.254 must not leave this host: the check runs in a
        # private network namespace where that address is on the loopback interface.
        reason = namespace_missing()
        if reason:
            skip(reason)
        env = dict(os.environ, S3GATE_BIN=h.s3gate_binary())
        r = subprocess.run(["unshare", "--user", "--map-root-user", "--net", sys.executable,
                            os.path.abspath(__file__), "--metadata-in-namespace"],
                           capture_output=True, text=True, timeout=120, cwd=h.HERE, env=env,
                           stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr[-4000:]}")
        result = json.loads(r.stdout.strip().splitlines()[-1])
        # Without the entry: refused, nothing connected.
        self.assertEqual(result["refused"]["status"], 403, result)
        self.assertEqual(result["refused"]["details"], "dns_pin_violation", result)
        self.assertEqual(result["refused"]["log"]["reason"], "dns_pin_violation", result)
        self.assertEqual(result["connections_after_refused"], 0, result)
        # With allowed_networks naming it: connected, to exactly that address.
        self.assertEqual(result["allowed"]["status"], 200, result)
        self.assertEqual(result["allowed"]["echo"], "metadata", result)
        self.assertEqual(result["allowed"]["log"]["decision"], "allow", result)
        self.assertEqual(result["allowed"]["log"]["upstream"], f"{METADATA}:{result['port']}", result)
        self.assertEqual(result["connections_after_allowed"], 1, result)
        self.assertEqual(result["exit_codes"], [0, 0], result)


class RebindingTest(PolicyTestCase):
    """An answer that changes between lookups (TTL 0, min_ttl 0s): the first lookup
    gives an allowed address, every later one a forbidden one. s3gate resolves each
    request once and connects to exactly the addresses it checked."""

    def setUp(self):
        super().setUp()
        # The forbidden address, on the same port as the allowed echo server: a connect
        # that followed a second lookup would land here.
        try:
            self.forbidden = h.EchoServer(host=FORBIDDEN, port=self.echo.port)
        except OSError as exc:
            skip(f"cannot listen on {FORBIDDEN}:{self.echo.port}: {exc}")
        self.addCleanup(self.forbidden.stop)

    def start(self):
        return self.start_proxy({"workers": 1,
                                 "dns": {"allowed_networks": ["127.0.0.1/32"], "min_ttl": "0s",
                                         "negative_ttl": "0s"}})

    def test_connects_to_the_checked_address_only(self):
        self.start()
        self.dns.flip(MEDIA, ["127.0.0.1"], [FORBIDDEN])
        rec = self.tunnel_ok(MEDIA)
        self.assert_log(rec, decision="allow", upstream=f"127.0.0.1:{self.echo.port}")
        self.assertEqual(self.dns.query_count(MEDIA, qtype=h.DnsServer.QTYPE_A), 1,
                         "one request, one lookup")
        # Later lookups answer the forbidden address: refused, never connected to.
        for _ in range(3):
            _, rec = self.connect_denied(MEDIA, 403, "destination_ip_prohibited", "dns_pin_violation")
            self.assert_log(rec, decision="deny", reason="dns_pin_violation", upstream=None)
        self.assertGreaterEqual(self.dns.query_count(MEDIA, qtype=h.DnsServer.QTYPE_A), 4,
                                "a TTL-0 answer was cached")
        time.sleep(0.3)  # a stray connect would have arrived by now
        self.assertEqual(len(self.forbidden.connections), 0,
                         f"connected to the forbidden address: {self.forbidden.connections}")
        self.assert_settled()

    def test_concurrent_requests_around_the_flip(self):
        # Several CONNECTs at once: each one either connects to the address its own
        # lookup checked, or is refused; none reaches the forbidden address.
        self.start()
        self.dns.flip(MEDIA, ["127.0.0.1"], [FORBIDDEN])
        socks = []
        for _ in range(8):
            s = h.open_client(self.proxy.port)
            self.addCleanup(s.close)
            s.sendall(h.connect_request(f"{MEDIA}:{self.echo.port}"))
            socks.append(s)
        statuses = []
        for s in socks:
            resp = h.read_head(s)
            statuses.append(resp.status if resp else None)
            s.close()
        self.assertTrue(set(statuses) <= {200, 403}, statuses)
        self.assertIn(200, statuses)
        for rec in self.proxy.access_lines():
            if rec.get("status") == 200:
                self.assertEqual(rec["upstream"], f"127.0.0.1:{self.echo.port}", rec)
        time.sleep(0.3)
        self.assertEqual(len(self.forbidden.connections), 0)
        self.assert_settled()


# ---------------------------------------------------------------------------
# the SNI check, with openssl s_client through the proxy


class SniTest(PolicyTestCase):
    def setUp(self):
        super().setUp()
        reason = openssl_missing()
        if reason:
            skip(reason)

    def s_client(self, servername, request=b""):
        """openssl s_client -proxy through s3gate to the TLS upstream; returns
        (returncode, stdout bytes)."""
        argv = ["openssl", "s_client", "-proxy", f"127.0.0.1:{self.proxy.port}",
                "-connect", f"{MEDIA}:{self.tls.port}", "-servername", servername,
                "-CAfile", os.path.join(self.pki.directory, "ca.pem"), "-ign_eof"]
        try:
            r = subprocess.run(argv, input=request, capture_output=True, timeout=20,
                               env=h.clean_env())
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"openssl s_client did not finish: {exc.stdout!r}") from None
        return r.returncode, r.stdout + r.stderr

    def sni_log(self):
        return self.proxy.wait_for_log(lambda r: r.get("host") == MEDIA and r.get("port") == self.tls.port,
                                       message="the tunnel's access-log line")

    def test_sni_mismatch_closes_the_tunnel(self):
        self.start_proxy({"tunnel": {"verify_sni": True}})
        before = metric(self.metrics(), "s3gate_denied_total", reason="sni_mismatch")
        tls_before = len(self.tls.connections)
        rc, out = self.s_client("other.example",
                                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertNotIn(h.TlsHttpServer.BODY, out, "a tunnel with another SNI was relayed")
        rec = self.sni_log()
        self.assert_log(rec, kind="connect", decision="deny", reason="sni_mismatch", status=200,
                        bytes_up=0, close="sni_mismatch")
        after = metric(self.metrics(), "s3gate_denied_total", reason="sni_mismatch")
        self.assertEqual(after, before + 1)
        for conn in self.tls.connections[tls_before:]:
            self.assertIsNone(conn.get("sni"), "ClientHello bytes reached the upstream")
        self.assert_settled()

    def test_matching_sni_works(self):
        self.start_proxy({"tunnel": {"verify_sni": True}})
        rc, out = self.s_client(MEDIA, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertIn(h.TlsHttpServer.BODY, out, out.decode("utf-8", "replace")[-2000:])
        self.assertIn(b"Verify return code: 0", out)
        rec = self.sni_log()
        self.assert_log(rec, decision="allow", reason=None, status=200,
                        upstream=f"127.0.0.1:{self.tls.port}")
        self.assertGreater(rec["bytes_up"], 0)
        self.assertGreater(rec["bytes_down"], 0)
        self.assertEqual(metric(self.metrics(), "s3gate_denied_total", reason="sni_mismatch"), 0)
        self.assert_settled()

    def test_matching_sni_in_upper_case_with_a_dot_works(self):
        # The server name is normalised as the CONNECT host is.
        self.start_proxy({"tunnel": {"verify_sni": True}})
        rc, out = self.s_client(MEDIA.upper() + ".",
                                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertIn(h.TlsHttpServer.BODY, out, out.decode("utf-8", "replace")[-2000:])
        self.assert_log(self.sni_log(), decision="allow", reason=None)
        self.assert_settled()


# ---------------------------------------------------------------------------
# report mode


class ReportModeTest(PolicyTestCase):
    def test_bucket_not_allowed_is_let_through_and_counted(self):
        self.start_proxy({"mode": "report"})
        rec = self.tunnel_ok(SECRET)
        self.assert_log(rec, kind="connect", decision="report", reason="bucket_not_allowed",
                        status=200, bucket="secret", upstream=f"127.0.0.1:{self.echo.port}")
        m = self.metrics()
        self.assertEqual(metric(m, "s3gate_denied_total", reason="bucket_not_allowed"), 1)
        self.assertEqual(metric(m, "s3gate_requests_total", kind="connect", decision="report"), 1)
        self.assertEqual(metric(m, "s3gate_requests_total", kind="connect", decision="deny"), 0)
        # An allowed bucket is still counted as allowed.
        self.tunnel_ok(MEDIA)
        m = self.metrics()
        self.assertEqual(metric(m, "s3gate_requests_total", kind="connect", decision="allow"), 1)
        self.assertEqual(metric(m, "s3gate_denied_total", reason="bucket_not_allowed"), 1)
        self.assert_settled()

    def test_access_point_is_reported(self):
        self.start_proxy({"mode": "report"})
        rec = self.tunnel_ok(ACCESS_POINT)
        self.assert_log(rec, decision="report", reason="host_not_allowed", status=200)
        self.assertEqual(metric(self.metrics(), "s3gate_denied_total", reason="host_not_allowed"), 1)
        self.assert_settled()

    def test_bad_input_still_denied(self):
        self.start_proxy({"mode": "report"})
        self.connect_denied("a..b.s3.us-west-2.amazonaws.com", 400, "http_request_error", "bad_host")
        self.assert_settled()


# ---------------------------------------------------------------------------
# the S3 service names that are not bucket endpoints


class ServiceNameTest(PolicyTestCase):
    CASES = [
        # (host, what the body must say)
        (ACCESS_POINT, "an S3 Access Point name"),
        ("media-111122223333.s3-accesspoint.dualstack.us-west-2.amazonaws.com",
         "an S3 Access Point name"),
        (ACCELERATE, "an S3 Transfer Acceleration name"),
        ("media.s3-accelerate.dualstack.amazonaws.com", "an S3 Transfer Acceleration name"),
        (MRAP, "an S3 Multi-Region Access Point name"),
        ("111122223333.s3-control.us-west-2.amazonaws.com", "an S3 Control name"),
        ("olap-111122223333.s3-object-lambda.us-west-2.amazonaws.com", "an S3 Object Lambda name"),
        ("s3-outposts.us-west-2.amazonaws.com", "an S3 on Outposts name"),
    ]

    def test_denied_with_what_they_are(self):
        # "media" is an allowed bucket and "*" regions are not needed: none of that helps.
        self.start_proxy({"buckets": [{"name": "*"}]})
        for host, says in self.CASES:
            with self.subTest(host=host):
                body, rec = self.connect_denied(host, 403, "http_request_denied", "host_not_allowed")
                self.assertIn(f"{host} is {says}", body)
                self.assertIn("list it under hosts to allow it", body)
                self.assert_log(rec, kind="connect", decision="deny", reason="host_not_allowed",
                                status=403, rule="-", upstream=None)
        self.assertEqual(self.dns.query_count(), 0, "a denied name was resolved")
        self.assertEqual(metric(self.metrics(), "s3gate_denied_total", reason="host_not_allowed"),
                         len(self.CASES))
        self.assert_settled()

    def test_plain_http_to_accelerate_denied(self):
        self.start_proxy()
        resp, client = h.send_raw(self.proxy.port,
                                  f"GET http://{ACCELERATE}/shot/010.exr HTTP/1.1\r\n"
                                  f"Host: {ACCELERATE}\r\n\r\n".encode())
        body = self.assert_error(resp, 403, "http_request_denied", "host_not_allowed")
        self.assertIn("Transfer Acceleration", body)
        self.assert_log(self.proxy.log_for_client(client), kind="http", decision="deny",
                        reason="host_not_allowed", status=403)
        self.assert_settled()

    def test_listed_in_hosts_is_allowed_on_its_ports(self):
        self.start_proxy({"hosts": [{"name": ACCESS_POINT, "ports": [self.echo.port]},
                                    {"name": ACCELERATE, "ports": [self.echo.port]}]})
        for host in (ACCESS_POINT, ACCELERATE):
            with self.subTest(host=host):
                rec = self.tunnel_ok(host)
                self.assert_log(rec, decision="allow", reason=None, rule="-",
                                upstream=f"127.0.0.1:{self.echo.port}")
        # Another port than the entry's: port_not_allowed, even though `ports` has it.
        self.connect_denied(ACCESS_POINT, 403, "http_request_denied", "port_not_allowed",
                            port=self.sink.port)
        # An access point that is not listed stays denied.
        self.connect_denied("other-111122223333.s3-accesspoint.us-west-2.amazonaws.com", 403,
                            "http_request_denied", "host_not_allowed")
        self.assert_settled()

    def test_look_alikes_are_plain_unknown_names(self):
        self.start_proxy()
        for host in (ACCESS_POINT + ".evil.com", "media.s3-accelerate.amazonaws.com.cn",
                     "allowed.s3.us-west-2.amazonaws.com.evil.com"):
            with self.subTest(host=host):
                body, _ = self.connect_denied(host, 403, "http_request_denied", "host_not_allowed")
                self.assertIn("is not an S3 endpoint or an allowed host", body)
        self.assert_settled()


# ---------------------------------------------------------------------------
# explain


class ExplainTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if h.s3gate_binary() is None:
            skip(f"no s3gate binary (S3GATE_BIN={os.environ.get('S3GATE_BIN')!r})")
        cls.tmp = tempfile.mkdtemp(prefix="s3gate-explain-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def explain(self, client, method, target, overrides=None):
        cfg = h.deep_merge(h.base_config(3128, 9464, 53, [443]), overrides or {})
        path = os.path.join(self.tmp, "explain.yaml")
        with open(path, "w") as f:
            f.write(h.to_yaml(cfg))
        r = h.run_s3gate(["-c", path, "explain", client, method, target])
        fields = {}
        for line in r.stdout.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        name = dict(kv.split("=", 1) for kv in fields.get("name", "").split() if "=" in kv)
        return r.returncode, fields, name, r.stdout + r.stderr

    def test_explain_table(self):
        listed = {"hosts": [{"name": ACCESS_POINT, "ports": [443]}]}
        cases = [
            # (method, target, overrides, exit, verdict, reason, kind, region, bucket)
            ("CONNECT", f"{MEDIA}:443", None, 0, "allow", "-", "virtual_hosted", "us-west-2",
             "media"),
            ("CONNECT", "Media.S3.Dualstack.US-West-2.amazonaws.com.:443", None, 0, "allow", "-",
             "virtual_hosted", "us-west-2", "media"),
            ("CONNECT", f"{SECRET}:443", None, 1, "deny", "bucket_not_allowed", "virtual_hosted",
             "us-west-2", "secret"),
            ("CONNECT", f"{SECRET}:443", {"mode": "report"}, 0, "report", "bucket_not_allowed",
             "virtual_hosted", "us-west-2", "secret"),
            ("CONNECT", "s3.us-west-2.amazonaws.com:443", None, 1, "deny", "path_style_denied",
             "endpoint", "us-west-2", "-"),
            ("GET", "http://s3.us-west-2.amazonaws.com/media/k", None, 0, "allow", "-", "endpoint",
             "us-west-2", "media"),
            ("CONNECT", f"{ACCESS_POINT}:443", None, 1, "deny", "host_not_allowed", "access_point",
             "us-west-2", "-"),
            ("CONNECT", f"{ACCESS_POINT}:443", listed, 0, "allow", "-", "access_point",
             "us-west-2", "-"),
            ("CONNECT", f"{ACCESS_POINT}:443", {"mode": "report"}, 0, "report", "host_not_allowed",
             "access_point", "us-west-2", "-"),
            ("CONNECT", f"{ACCELERATE}:443", None, 1, "deny", "host_not_allowed", "accelerate", "-",
             "media"),
            ("CONNECT", f"{MRAP}:443", None, 1, "deny", "host_not_allowed",
             "multi_region_access_point", "-", "-"),
            ("CONNECT", "s3-control.eu-west-1.amazonaws.com:443", None, 1, "deny",
             "host_not_allowed", "s3_control", "eu-west-1", "-"),
            ("CONNECT", "media--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com:443", None,
             1, "deny", "bucket_not_allowed", "express", "us-west-2", "media--usw2-az1--x-s3"),
            ("CONNECT", "media.s3.us-west-2.amazonaws.com.evil.com:443", None, 1, "deny",
             "host_not_allowed", "not_s3", "-", "-"),
            ("CONNECT", "0x7f000001:443", None, 1, "deny", "ip_literal_denied", "not_s3", "-", "-"),
        ]
        for method, target, overrides, code, verdict, reason, kind, region, bucket in cases:
            rc, fields, name, out = self.explain("127.0.0.1", method, target, overrides)
            with self.subTest(target=target, overrides=overrides):
                self.assertEqual(rc, code, out)
                self.assertEqual(fields.get("verdict"), verdict, out)
                self.assertEqual(fields.get("reason"), reason, out)
                self.assertEqual(name.get("kind"), kind, out)
                self.assertEqual(name.get("region"), region, out)
                self.assertEqual(name.get("bucket"), bucket, out)

    def test_explain_prints_the_detail(self):
        rc, fields, _, out = self.explain("127.0.0.1", "CONNECT", f"{ACCESS_POINT}:443")
        self.assertEqual(rc, 1, out)
        self.assertIn("an S3 Access Point name", fields.get("detail", ""), out)
        self.assertIn("403", fields.get("status", ""), out)

    def test_explain_bad_port_spellings(self):
        for target in (f"{MEDIA}:0443", f"{MEDIA}:65536", f"user@{MEDIA}:443"):
            rc, fields, _, out = self.explain("127.0.0.1", "CONNECT", target)
            with self.subTest(target=target):
                self.assertEqual(rc, 1, out)
                self.assertEqual(fields.get("reason"), "bad_request", out)


# ---------------------------------------------------------------------------
# run inside a private network namespace (see test_metadata_answer_allowed_...)


def metadata_in_namespace():
    """Runs as root of a fresh user and network namespace: puts 169.254.169.254 on
    the namespace's own loopback interface, serves an echo there, and asks s3gate
    to tunnel to a name that DNS answers with it, without and with an
    allowed_networks entry naming it. Prints one JSON line of what happened."""
    for argv in (["ip", "link", "set", "lo", "up"],
                 ["ip", "addr", "add", f"{METADATA}/32", "dev", "lo"]):
        subprocess.run(argv, check=True, timeout=10)
    workdir = tempfile.mkdtemp(prefix="s3gate-netns-")
    dns = h.DnsServer()
    dns.set(MEDIA, [METADATA])
    echo = h.EchoServer(host=METADATA)
    result = {"port": echo.port, "exit_codes": []}

    def attempt(allowed_networks, name):
        proxy_port, admin_port = h.free_port(), h.free_port()
        cfg = h.deep_merge(h.base_config(proxy_port, admin_port, dns.port, [echo.port]),
                           {"dns": {"allowed_networks": allowed_networks}})
        proxy = h.S3gate(cfg, workdir, name=name)
        proxy.start()
        try:
            sock, resp = h.proxy_connect(proxy.port, f"{MEDIA}:{echo.port}")
            client = h.client_name(sock)
            out = {"status": resp.status}
            if resp.status == 200:
                out["echo"] = h.echo_roundtrip(sock, b"metadata").decode()
            else:
                ps = resp.proxy_status() or {}
                out["details"] = ps.get("details")
            sock.close()
            out["log"] = proxy.log_for_client(client)
            return out
        finally:
            code, _ = proxy.stop()
            result["exit_codes"].append(code)

    try:
        result["refused"] = attempt([], "refused")
        time.sleep(0.2)
        result["connections_after_refused"] = len(echo.connections)
        result["allowed"] = attempt([f"{METADATA}/32"], "allowed")
        echo.wait_done(timeout=5)
        result["connections_after_allowed"] = len(echo.connections)
    finally:
        echo.stop()
        dns.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1:] == ["--metadata-in-namespace"]:
        metadata_in_namespace()
    else:
        unittest.main()
