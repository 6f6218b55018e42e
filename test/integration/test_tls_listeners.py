"""TLS on s3gate's own listeners, through the real binary:

- an HTTPS proxy (a forward listener with `tls`): curl --proxy https://...,
  botocore's proxies_config, the certificate reloaded on SIGHUP, client
  certificates (client_ca) as the log's `identity` and in bucket rules'
  `identities`;
- an sni listener: a TLS client connecting straight to s3gate with an S3 server
  name is relayed unchanged to the upstream on port 443 (a TlsHttpServer on a
  loopback address of its own; binding 443 needs root, else skipped)."""

import datetime
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import unittest

import harness as h
from test_nlb import GateTestCase, admin_get, metric, pp_v1, pp_v2

HAVE_CURL = shutil.which("curl") is not None


class ListenerPki:
    """A CA of our own (the harness's TestPki keeps its key to itself) issuing
    server certificates for 127.0.0.1/localhost and client certificates by CN."""

    def __init__(self, directory, name="s3gate listener CA"):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._x509, self._hashes, self._ser, self._ec, self._oid = (
            x509, hashes, serialization, ec, NameOID)
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.now = datetime.datetime.now(datetime.timezone.utc)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(self.now - datetime.timedelta(hours=1))
            .not_valid_after(self.now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256()))
        self.ca_file = os.path.join(directory, "ca.pem")
        with open(self.ca_file, "wb") as f:
            f.write(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem, cn, server=True):
        """Writes stem.pem (leaf then CA) and stem.key; returns (cert, key, serial)."""
        import ipaddress
        x509, oid = self._x509, self._oid
        from cryptography.x509.oid import ExtendedKeyUsageOID
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(oid.COMMON_NAME, cn)]))
            .issuer_name(self.name).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(self.now - datetime.timedelta(hours=1))
            .not_valid_after(self.now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(h.LOOPBACK))]),
                critical=False).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        cert = builder.sign(self.key, self._hashes.SHA256())
        pem = self._ser.Encoding.PEM
        cert_path = os.path.join(self.directory, stem + ".pem")
        key_path = os.path.join(self.directory, stem + ".key")
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(pem) + self.cert.public_bytes(pem))
        with open(key_path, "wb") as f:
            f.write(key.private_bytes(pem, self._ser.PrivateFormat.PKCS8,
                                      self._ser.NoEncryption()))
        return cert_path, key_path, serial


def tls_to_proxy(port, ca_file, client=None, preamble=b"", timeout=10.0):
    """A TLS connection to an HTTPS proxy listener; client: (cert, key) or None."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if client:
        ctx.load_cert_chain(*client)
    raw = socket.create_connection((h.LOOPBACK, port), timeout=timeout)
    if preamble:
        raw.sendall(preamble)
    local = h.client_name(raw)
    return ctx.wrap_socket(raw, server_hostname=h.LOOPBACK), local


def tls_connect_request(tls, target, timeout=10.0):
    """CONNECT over an established TLS connection to the proxy; returns Response
    (the body read to EOF when it is not a 2xx)."""
    tls.sendall(h.connect_request(target))
    resp = h.read_head(tls, timeout)
    if resp is not None and not 200 <= resp.status < 300:
        rest, resp.end = _read_tls_to_eof(tls, timeout)
        resp.body = resp.rest + rest
    return resp


def _read_tls_to_eof(tls, timeout):
    out = b""
    deadline = time.monotonic() + timeout
    for _ in range(10000):
        left = deadline - time.monotonic()
        if left <= 0:
            return out, "timeout"
        tls.settimeout(left)
        try:
            data = tls.recv(65536)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return out, "eof"
        except (ConnectionResetError, ssl.SSLError):
            return out, "reset"
        if not data:
            return out, "eof"
        out += data
    return out, "limit"


def serial_of(port, ca_file):
    """The serial number of the certificate a new TLS connection to port sees."""
    tls, _ = tls_to_proxy(port, ca_file)
    with tls:
        return int(tls.getpeercert()["serialNumber"], 16)


# ---------------------------------------------------------------------------
# 4. HTTPS proxy listener


class HttpsProxyListenerTest(GateTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.lpki = ListenerPki(os.path.join(cls.tmp, "listener-pki"))
        cls.server_cert, cls.server_key, cls.server_serial = cls.lpki.issue("proxy", "s3gate proxy")
        cls.alice = cls.lpki.issue("alice", "alice", server=False)[:2]
        cls.bob = cls.lpki.issue("bob", "bob", server=False)[:2]
        other = ListenerPki(os.path.join(cls.tmp, "other-pki"), "someone else's CA")
        cls.mallory = other.issue("mallory", "alice", server=False)[:2]

    def start_tls(self, client_ca=False, proxy_protocol=False, cert=None, key=None, **extra):
        tls = {"certificate": cert or self.server_cert, "private_key": key or self.server_key}
        if client_ca:
            tls["client_ca"] = self.lpki.ca_file
        cfg = self.config(extra)
        cfg["listeners"] = [{"address": f"{h.LOOPBACK}:{self.proxy_port}", "tls": tls}]
        if proxy_protocol:
            cfg["listeners"][0]["proxy_protocol"] = True
        return self.start_gate(config=cfg)

    def curl(self, url, client=None, extra=()):
        args = ["curl", "-sS", "--max-time", "20",
                "--proxy", f"https://127.0.0.1:{self.proxy.port}",
                "--proxy-cacert", self.lpki.ca_file, "--cacert", self.pki.ca_file]
        if client:
            args += ["--proxy-cert", client[0], "--proxy-key", client[1]]
        return subprocess.run(args + list(extra) + [url], capture_output=True, timeout=30,
                              env=h.clean_env())

    def url(self, bucket="media"):
        return f"https://{h.s3_name(bucket)}:{self.tls.port}/"

    @unittest.skipUnless(HAVE_CURL, "curl not on PATH")
    def test_curl_through_https_proxy(self):
        self.start_tls()
        before = len(self.tls.connections)
        out = self.curl(self.url())
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        self.assertEqual(out.stdout, h.TlsHttpServer.BODY)
        self.assertEqual(self.tls.connections[before]["sni"], h.s3_name("media"))
        rec = self.proxy.wait_for_log(lambda r: r.get("port") == self.tls.port)
        self.assert_log(rec, kind="connect", method="CONNECT", decision="allow", status=200,
                        bucket="media")
        self.assertIn(rec["close"], ("client_eof", "upstream_eof"))  # whichever closed first
        self.assertNotIn("identity", rec)
        self.assertGreater(rec["bytes_down"], len(h.TlsHttpServer.BODY))
        self.assert_settled()

    def test_plain_http_to_tls_listener_is_closed(self):
        self.start_tls()
        resp, _ = h.send_raw(self.proxy.port, h.connect_request(f"{h.s3_name('media')}:443"),
                             timeout=5)
        self.assertIsNone(resp, "an HTTP answer in clear text on a TLS listener")

    def test_certificate_reloaded_on_sighup(self):
        work = os.path.join(self.workdir, "tls")
        os.makedirs(work)
        cert, key = os.path.join(work, "proxy.pem"), os.path.join(work, "proxy.key")
        shutil.copy(self.server_cert, cert)
        shutil.copy(self.server_key, key)
        gate = self.start_tls(cert=cert, key=key)
        self.assertEqual(serial_of(gate.port, self.lpki.ca_file), self.server_serial)
        # A connection made before the swap stays up and working.
        old, _ = tls_to_proxy(gate.port, self.lpki.ca_file)
        self.addCleanup(old.close)
        resp = tls_connect_request(old, f"{h.s3_name('media')}:{self.echo.port}")
        self.assertEqual(resp.status, 200)

        new_cert, new_key, new_serial = self.lpki.issue("renewed", "s3gate proxy renewed")
        shutil.copy(new_cert, cert + ".tmp")
        shutil.copy(new_key, key + ".tmp")
        os.replace(cert + ".tmp", cert)
        os.replace(key + ".tmp", key)
        gate.signal(signal.SIGHUP)
        h.wait_until(lambda: metric(self.admin_port, "s3gate_config_reloads_total",
                                    result="success") == 1, 5, message="reload")
        self.assertEqual(serial_of(gate.port, self.lpki.ca_file), new_serial)
        old.sendall(b"old tunnel")
        self.assertEqual(_recv_exact(old, 10), b"old tunnel")

        # A certificate that cannot be loaded: rejected, the renewed one stays.
        with open(key, "w") as f:
            f.write("not a key\n")
        gate.signal(signal.SIGHUP)
        h.wait_until(lambda: metric(self.admin_port, "s3gate_config_reloads_total",
                                    result="failure") == 1, 5, message="failed reload")
        self.assertEqual(metric(self.admin_port, "s3gate_config_last_reload_successful"), 0)
        self.assertIn("private_key", gate.stderr())
        self.assertEqual(serial_of(gate.port, self.lpki.ca_file), new_serial)

    @unittest.skipUnless(HAVE_CURL, "curl not on PATH")
    def test_client_certificate_identity_and_bucket_rules(self):
        self.start_tls(client_ca=True, buckets=[{"name": "media", "identities": ["alice"]}])
        out = self.curl(self.url(), client=self.alice)
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        self.assertEqual(out.stdout, h.TlsHttpServer.BODY)
        rec = self.proxy.wait_for_log(lambda r: r.get("identity") == "alice")
        self.assert_log(rec, decision="allow", bucket="media", rule="media", status=200)

        out = self.curl(self.url(), client=self.bob)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn(b"403", out.stderr)
        rec = self.proxy.wait_for_log(lambda r: r.get("identity") == "bob")
        self.assert_log(rec, decision="deny", reason="bucket_not_allowed", status=403)
        self.assert_settled()

    def test_no_client_certificate_gets_readable_403(self):
        # What the implementation does: the handshake completes without a
        # certificate, then a 403 client_certificate_required over TLS.
        self.start_tls(client_ca=True)
        tls, local = tls_to_proxy(self.proxy.port, self.lpki.ca_file)
        self.addCleanup(tls.close)
        resp = tls_connect_request(tls, f"{h.s3_name('media')}:{self.echo.port}")
        self.assert_error(resp, 403, "http_request_denied", "client_certificate_required")
        rec = self.proxy.log_for_client(local)
        self.assert_log(rec, decision="deny", reason="client_certificate_required", status=403)
        self.assertNotIn("identity", rec)
        self.assertEqual(metric(self.admin_port, "s3gate_denied_total",
                                reason="client_certificate_required"), 1)

    def test_certificate_from_another_ca_fails_the_handshake(self):
        self.start_tls(client_ca=True)
        raw = socket.create_connection((h.LOOPBACK, self.proxy.port), timeout=10)
        self.addCleanup(raw.close)
        local = h.client_name(raw)
        ctx = ssl.create_default_context(cafile=self.lpki.ca_file)
        ctx.load_cert_chain(*self.mallory)
        with self.assertRaises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            tls = ctx.wrap_socket(raw, server_hostname=h.LOOPBACK)
            self.addCleanup(tls.close)
            # TLS 1.3: the client learns of the rejection on its first read.
            tls.sendall(h.connect_request(f"{h.s3_name('media')}:{self.echo.port}"))
            data = tls.recv(100)
            if not data:
                raise ssl.SSLEOFError("closed")
        rec = self.proxy.log_for_client(local)
        self.assert_log(rec, decision="deny", reason="client_certificate_required", status=0,
                        close="tls_handshake_failed")

    def test_proxy_protocol_before_tls(self):
        # An NLB TCP listener with PROXY v2 in front of an HTTPS proxy listener.
        self.start_tls(client_ca=True, proxy_protocol=True)
        header = pp_v2(("127.0.0.61", 6161), ("127.0.0.1", self.proxy.port), vpce="vpce-tls")
        tls, peer = tls_to_proxy(self.proxy.port, self.lpki.ca_file, client=self.alice,
                                 preamble=header)
        self.addCleanup(tls.close)
        resp = tls_connect_request(tls, f"{h.s3_name('media')}:{self.echo.port}")
        self.assertEqual(resp.status, 200)
        tls.sendall(b"abc")
        self.assertEqual(_recv_exact(tls, 3), b"abc")
        tls.close()
        rec = self.proxy.log_for_client("127.0.0.61:6161")
        self.assert_log(rec, decision="allow", status=200)
        self.assertEqual((rec.get("via"), rec.get("vpce"), rec.get("identity")),
                         (peer, "vpce-tls", "alice"))

    def test_botocore_with_https_proxy(self):
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            self.skipTest(f"boto3 not importable: {exc}")
        self.start_tls(client_ca=True)
        before = len(self.tls.connections)
        proxy_url = f"https://127.0.0.1:{self.proxy.port}"
        try:
            config = Config(proxies={"https": proxy_url},
                            proxies_config={"proxy_ca_bundle": self.lpki.ca_file,
                                            "proxy_client_cert": self.alice},
                            s3={"addressing_style": "virtual"}, retries={"max_attempts": 1},
                            connect_timeout=10, read_timeout=20)
        except TypeError as exc:
            self.skipTest(f"this botocore has no proxies_config: {exc}")
        s3 = boto3.client("s3", region_name=h.REGION,
                          endpoint_url=f"https://s3.{h.REGION}.amazonaws.com:{self.tls.port}",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          verify=self.pki.ca_file, config=config)
        # The TLS upstream answers any request with a 200: enough for HeadBucket.
        s3.head_bucket(Bucket="media")
        request = self.tls.connections[before]["request"]
        self.assertTrue(request.startswith("HEAD / HTTP/1.1"), request)
        self.assertIn(f"host: {h.s3_name('media')}", request.lower())
        self.assertIn("AWS4-HMAC-SHA256", request)
        rec = self.proxy.wait_for_log(lambda r: r.get("identity") == "alice")
        self.assert_log(rec, kind="connect", decision="allow", bucket="media", status=200)

    def test_silent_client_on_tls_listener_times_out(self):
        self.start_tls()
        raw = socket.create_connection((h.LOOPBACK, self.proxy.port), timeout=10)
        self.addCleanup(raw.close)
        start = time.monotonic()
        data, how = h.recv_until_eof(raw, timeout=5)
        self.assertEqual(how, "eof", "not closed within header_timeout (2 s) + 3 s")
        self.assertLess(time.monotonic() - start, 4.0)

    def test_bare_tcp_probe_leaves_no_line(self):
        # SPEC-adjacent: like the plain and PROXY listeners, a connection that
        # says nothing (a TCP health check) leaves no access-log line.
        self.start_tls()
        with socket.create_connection((h.LOOPBACK, self.proxy.port), timeout=5):
            pass
        time.sleep(0.5)
        self.assertEqual(self.proxy.access_lines(), [])


def _recv_exact(sock, n, timeout=5.0):
    out = b""
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(n - len(out))
        if not data:
            break
        out += data
    return out


# ---------------------------------------------------------------------------
# 5. SNI listener

SNI_UPSTREAM = "127.0.0.87"  # the TlsHttpServer's own loopback address, port 443


class SniListenerTest(GateTestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            reason = "binding port 443 (the sni listener's fixed upstream port) needs root"
            print(f"SKIP {cls.__name__}: {reason}", flush=True)
            raise unittest.SkipTest(reason)
        super().setUpClass()
        try:
            cls.upstream443 = h.TlsHttpServer(cls.pki, host=SNI_UPSTREAM, port=443)
        except OSError as exc:
            cls.tearDownClass()
            raise unittest.SkipTest(f"cannot bind {SNI_UPSTREAM}:443: {exc}")

    @classmethod
    def tearDownClass(cls):
        up = getattr(cls, "upstream443", None)
        if up is not None:
            up.stop()
        super().tearDownClass()

    def start_sni(self, proxy_protocol=False):
        self.dns.set("*." + h.S3_SUFFIX, [SNI_UPSTREAM])
        cfg = self.config({"ports": [443]})
        listener = {"address": f"{h.LOOPBACK}:{self.proxy_port}", "mode": "sni"}
        if proxy_protocol:
            listener["proxy_protocol"] = True
        cfg["listeners"] = [listener]
        return self.start_gate(config=cfg)

    def tls_client(self, server_name, preamble=b""):
        """A TLS client straight to the sni listener; returns (tls or exception, local name)."""
        ctx = ssl.create_default_context(cafile=self.pki.ca_file)
        if server_name is None:
            ctx.check_hostname = False
        raw = socket.create_connection((h.LOOPBACK, self.proxy.port), timeout=10)
        self.addCleanup(raw.close)
        local = h.client_name(raw)
        if preamble:
            raw.sendall(preamble)
        try:
            tls = ctx.wrap_socket(raw, server_hostname=server_name)
        except (ssl.SSLError, OSError) as exc:
            return exc, local
        self.addCleanup(tls.close)
        return tls, local

    def get(self, tls, host):
        tls.sendall(f"GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return _read_tls_to_eof(tls, 10)[0]

    def test_relayed_unchanged_to_the_upstream(self):
        gate = self.start_sni()
        name = h.s3_name("media")
        before = len(self.upstream443.connections)
        tls, local = self.tls_client(name)
        self.assertIsInstance(tls, ssl.SSLSocket, repr(tls))
        # The certificate is the upstream's, verified for the S3 name: s3gate did
        # not terminate anything.
        self.assertEqual(tls.getpeercert()["subject"][0][0][1], h.TestPki.LEAF_NAMES[0])
        answer = self.get(tls, name)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK"), answer)
        self.assertTrue(answer.endswith(h.TlsHttpServer.BODY))
        record = self.upstream443.connections[before]
        self.assertEqual(record["sni"], name)
        self.assertTrue(record["request"].startswith("GET /x HTTP/1.1"))
        tls.close()  # the tunnel ends (and is logged) once both sides have closed
        rec = gate.log_for_client(local)
        self.assert_log(rec, kind="sni", method="-", host=name, port=443, bucket="media",
                        rule="media", decision="allow", upstream=f"{SNI_UPSTREAM}:443")
        self.assertGreater(rec["bytes_up"], 0)
        self.assertGreater(rec["bytes_down"], len(h.TlsHttpServer.BODY))
        self.assertEqual(metric(self.admin_port, "s3gate_requests_total", kind="connect",
                                decision="allow"), 1)
        self.assert_settled()

    @unittest.skipUnless(HAVE_CURL, "curl not on PATH")
    def test_curl_connect_to(self):
        gate = self.start_sni()
        name = h.s3_name("media")
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "--cacert", self.pki.ca_file,
             "--connect-to", f"{name}:443:127.0.0.1:{gate.port}", f"https://{name}/"],
            capture_output=True, timeout=30, env=h.clean_env())
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        self.assertEqual(out.stdout, h.TlsHttpServer.BODY)
        gate.wait_for_log(lambda r: r.get("kind") == "sni" and r.get("decision") == "allow")

    def test_no_server_name_is_closed_bad_host(self):
        gate = self.start_sni()
        result, local = self.tls_client(None)
        if isinstance(result, ssl.SSLSocket):
            self.assertEqual(_read_tls_to_eof(result, 5)[0], b"")
        rec = gate.log_for_client(local)
        self.assert_log(rec, kind="sni", method="-", decision="deny", reason="bad_host")
        self.assertEqual(metric(self.admin_port, "s3gate_denied_total", reason="bad_host"), 1)

    def test_non_tls_bytes_are_closed_bad_host(self):
        gate = self.start_sni()
        resp, local = h.send_raw(gate.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
        self.assertIsNone(resp, "an HTTP answer on an sni listener")
        rec = gate.log_for_client(local)
        self.assert_log(rec, kind="sni", method="-", decision="deny", reason="bad_host")

    def test_denied_bucket_is_closed_and_logged(self):
        gate = self.start_sni()
        before = len(self.upstream443.connections)
        result, local = self.tls_client(h.s3_name("secret"))
        self.assertNotIsInstance(result, ssl.SSLSocket, "a handshake completed for a denied bucket")
        rec = gate.log_for_client(local)
        self.assert_log(rec, kind="sni", method="-", host=h.s3_name("secret"), decision="deny",
                        reason="bucket_not_allowed")
        self.assertEqual(len(self.upstream443.connections), before, "the upstream was contacted")
        self.assertEqual(metric(self.admin_port, "s3gate_requests_total", kind="connect",
                                decision="deny"), 1)

    def test_sni_listener_with_proxy_protocol(self):
        gate = self.start_sni(proxy_protocol=True)
        name = h.s3_name("media")
        tls, peer = self.tls_client(name, preamble=pp_v1(("127.0.0.71", 7171)))
        self.assertIsInstance(tls, ssl.SSLSocket, repr(tls))
        self.assertTrue(self.get(tls, name).endswith(h.TlsHttpServer.BODY))
        tls.close()
        rec = gate.log_for_client("127.0.0.71:7171")
        self.assert_log(rec, kind="sni", decision="allow")
        self.assertEqual(rec.get("via"), peer)
