"""Checks of the harness itself, without s3gate: the DNS server, the upstreams,
the certificates (with curl), the silent and refusing ports, YAML output and
moto over TLS (with boto3). When a proxy test fails, this file passing says the
failure is the proxy's, not the harness's."""

import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import harness as h


class DnsServerTest(unittest.TestCase):
    def setUp(self):
        self.dns = h.DnsServer()
        self.addCleanup(self.dns.stop)

    def test_answers_from_table_wildcard_and_default(self):
        self.dns.set("*.s3.us-west-2.amazonaws.com", ["127.0.0.2", "::1"], ttl=42)
        self.dns.set("exact.example.com", ["10.1.2.3"])
        self.assertEqual(h.dns_query(self.dns.port, "media.s3.us-west-2.amazonaws.com"), (0, ["127.0.0.2"]))
        self.assertEqual(h.dns_query(self.dns.port, "MEDIA.s3.us-west-2.amazonaws.com", 28), (0, ["::1"]))
        self.assertEqual(h.dns_query(self.dns.port, "exact.example.com"), (0, ["10.1.2.3"]))
        self.assertEqual(h.dns_query(self.dns.port, "anything.example.org"), (0, ["127.0.0.1"]))
        self.assertEqual(h.dns_query(self.dns.port, "anything.example.org", 28), (0, []))
        self.assertEqual(self.dns.query_count("media.s3.us-west-2.amazonaws.com"), 2)
        self.assertEqual(self.dns.query_count("media.s3.us-west-2.amazonaws.com", qtype=1), 1)
        self.assertEqual(self.dns.query_count(), 5)
        self.dns.reset_counts()
        self.assertEqual(self.dns.query_count(), 0)

    def test_failures(self):
        self.dns.set_failure("bad.example.com", "servfail")
        self.dns.set_failure("nx.example.com", "nxdomain")
        self.dns.set_failure("quiet.example.com", "drop")
        self.assertEqual(h.dns_query(self.dns.port, "bad.example.com"), (2, []))
        self.assertEqual(h.dns_query(self.dns.port, "nx.example.com"), (3, []))
        self.assertIsNone(h.dns_query(self.dns.port, "quiet.example.com", timeout=0.3))
        self.assertEqual(self.dns.query_count("quiet.example.com"), 1)

    def test_truncated_malformed_and_changing_answers(self):
        dns = h.DnsServer(tcp=True)
        self.addCleanup(dns.stop)
        dns.set("tc.example.com", ["10.1.1.1"])
        dns.set_failure("tc.example.com", "truncate")
        reply = h.dns_exchange(dns.port, "tc.example.com")
        self.assertEqual(struct.unpack("!HH", reply[2:6]), (0x8180 | 0x0200, 1))  # TC, no answer
        self.assertEqual(reply[6:8], b"\0\0")
        self.assertEqual(h.dns_query(dns.port, "tc.example.com", tcp=True), (0, ["10.1.1.1"]))
        self.assertEqual(dns.tcp_queries, 1)
        dns.set_failure("bad.example.com", "malformed")
        reply = h.dns_exchange(dns.port, "bad.example.com")
        with self.assertRaises((AssertionError, ValueError, struct.error, IndexError)):
            h.dns_query(dns.port, "bad.example.com")
        self.assertEqual(struct.unpack("!H", reply[6:8])[0], 1)  # one answer announced...
        self.assertEqual(len(reply), 12 + len("bad.example.com") + 2 + 4 + 12 + 2)  # ...cut short
        dns.set_sequence("flip.example.com", [["10.0.0.1"], ["10.0.0.2"]], ttl=0)
        self.assertEqual(h.dns_query(dns.port, "flip.example.com", 28), (0, []))  # AAAA: no step
        self.assertEqual(h.dns_query(dns.port, "flip.example.com"), (0, ["10.0.0.1"]))
        self.assertEqual(h.dns_query(dns.port, "flip.example.com"), (0, ["10.0.0.2"]))
        self.assertEqual(h.dns_query(dns.port, "flip.example.com"), (0, ["10.0.0.2"]))

    def test_no_default_is_nxdomain(self):
        dns = h.DnsServer(default=None)
        self.addCleanup(dns.stop)
        self.assertEqual(h.dns_query(dns.port, "x.example.com"), (3, []))


class UpstreamTest(unittest.TestCase):
    def test_echo(self):
        srv = h.EchoServer()
        self.addCleanup(srv.stop)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            self.assertEqual(h.echo_roundtrip(s, b"ping" * 1000), b"ping" * 1000)
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(h.recv_until_eof(s, 5), (b"", "eof"))
        rec = srv.wait_done()[0]
        self.assertTrue(rec["eof_seen"])
        self.assertEqual(rec["bytes_in"], 4000)

    def test_sink_and_source(self):
        sink = h.SinkServer()
        self.addCleanup(sink.stop)
        with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as s:
            for c in h.pattern_chunks(3 << 20):
                s.sendall(c)
            s.shutdown(socket.SHUT_WR)
            data, how = h.recv_until_eof(s, 10)
        self.assertEqual(how, "eof")
        self.assertEqual(data.decode(), f"{h.pattern_sha256(3 << 20)} {3 << 20}\n")

        size = (2 << 20) + 12345
        src = h.SourceServer(size)
        self.addCleanup(src.stop)
        with socket.create_connection(("127.0.0.1", src.port), timeout=5) as s:
            data, how = h.recv_until_eof(s, 10, limit=1 << 30)
            self.assertEqual(how, "eof")
            self.assertEqual(hashlib.sha256(data).hexdigest(), h.pattern_sha256(size))
            s.sendall(b"after")
            s.shutdown(socket.SHUT_WR)
        rec = src.wait_done()[0]
        self.assertTrue(rec["eof_seen"])
        self.assertEqual(rec["bytes_in"], 5)

    @unittest.skipIf(shutil.which("curl") is None, "curl not on PATH")
    def test_tls_upstream_with_curl(self):
        pki = h.TestPki.get()
        srv = h.TlsHttpServer(pki)
        self.addCleanup(srv.stop)
        name = h.s3_name("media")
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "--noproxy", "*", "--cacert", pki.ca_file,
             "--resolve", f"{name}:{srv.port}:127.0.0.1", f"https://{name}:{srv.port}/"],
            capture_output=True, timeout=20, env=h.clean_env())
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, h.TlsHttpServer.BODY)
        rec = srv.wait_done()[0]
        self.assertEqual(rec["sni"], name)
        self.assertTrue(rec["request"].startswith("GET / HTTP/1.1\r\n"))

    def test_refusing_and_silent_ports(self):
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", h.refusing_port()), timeout=2).close()
        silent = h.SilentPort()
        self.addCleanup(silent.stop)
        t = time.monotonic()
        self.assertTrue(silent.works(0.5), "SYNs to the silent port were not dropped")
        self.assertGreaterEqual(time.monotonic() - t, 0.45)


class HelpersTest(unittest.TestCase):
    def test_proxy_status_parsing(self):
        ps = h.parse_proxy_status('s3gate; error=http_request_denied; details="bucket_not_allowed"')
        self.assertEqual(ps, {"proxy": "s3gate", "error": "http_request_denied",
                              "details": "bucket_not_allowed"})
        ps = h.parse_proxy_status('s3gate;error=dns_timeout;details="a \\"q\\" b";rcode=2')
        self.assertEqual(ps["details"], 'a "q" b')
        self.assertEqual(ps["rcode"], "2")

    def test_yaml_round_trip(self):
        try:
            import yaml
        except ImportError:
            self.skipTest("PyYAML not installed (only used to check the harness's YAML writer)")
        cfg = h.base_config(1, 2, 3, [4, 5])
        cfg["dns"]["pins"] = [{"host": "*.s3.us-west-2.amazonaws.com", "addresses": ["127.0.0.1"]}]
        cfg["hosts"] = []
        cfg["access_log"] = "off"
        self.assertEqual(yaml.safe_load(h.to_yaml(cfg)), cfg)

    def test_deep_merge(self):
        base = {"a": {"b": 1, "c": 2}, "d": 3}
        self.assertEqual(h.deep_merge(base, {"a": {"b": 9}, "d": None, "e": [1]}),
                         {"a": {"b": 9, "c": 2}, "e": [1]})


class RunnerTest(unittest.TestCase):
    """run.py, which ctest runs every integration file with: 0 / 77 / 1."""

    MODULES = {
        "m_pass": "def test_a(self): self.assertEqual(1, 1)\n"
                  "    @unittest.skip('not here')\n    def test_b(self): pass\n",
        "m_skip": "def test_a(self): self.skipTest('needs root')\n"
                  "    def test_b(self): self.skipTest('needs root')\n",
        "m_class_skip": "@classmethod\n    def setUpClass(cls): raise unittest.SkipTest('no binary')\n"
                        "    def test_a(self): pass\n",
        "m_fail": "def test_a(self): self.assertEqual(1, 2)\n"
                  "    def test_b(self): self.skipTest('x')\n",
        "m_error": "def test_a(self): raise RuntimeError('boom')\n",
        "m_xfail": "@unittest.expectedFailure\n    def test_a(self): self.assertEqual(1, 2)\n",
        "m_xpass": "@unittest.expectedFailure\n    def test_a(self): pass\n",
        "m_empty": "pass\n",
    }

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="s3gate-runner-")
        for name, body in cls.MODULES.items():
            with open(os.path.join(cls.dir, name + ".py"), "w") as f:
                f.write("import unittest\n\n\nclass T(unittest.TestCase):\n    " + body)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def run_module(self, name):
        out = subprocess.run([sys.executable, os.path.join(h.HERE, "run.py"), name], cwd=self.dir,
                             capture_output=True, text=True, timeout=60,
                             env=h.clean_env({"PYTHONPATH": self.dir, "PYTHONDONTWRITEBYTECODE": "1"}))
        return out.returncode, out.stderr

    def test_exit_status_per_outcome(self):
        expected = {"m_pass": 0, "m_skip": 77, "m_class_skip": 77, "m_fail": 1, "m_error": 1,
                    "m_xfail": 0, "m_xpass": 1, "m_empty": 1, "m_missing": 1}
        got = {name: self.run_module(name)[0] for name in expected}
        self.assertEqual(got, expected)

    def test_skip_reasons_printed(self):
        code, err = self.run_module("m_skip")
        self.assertEqual(code, 77, err)
        self.assertIn("2 x needs root", err)
        code, err = self.run_module("m_class_skip")
        self.assertEqual(code, 77, err)
        self.assertIn("1 x no binary", err)
        code, err = self.run_module("m_pass")
        self.assertEqual(code, 0, err)
        self.assertIn("OK: 1 passed, 1 skipped", err)


class MotoTlsTest(unittest.TestCase):
    def test_boto3_against_moto_over_tls_without_proxy(self):
        reason = h.moto_available()
        if reason:
            self.skipTest(reason)
        import boto3
        from botocore.config import Config
        pki = h.TestPki.get()
        tmp = tempfile.mkdtemp(prefix="s3gate-moto-")
        self.addCleanup(shutil.rmtree, tmp, True)
        moto = h.MotoTlsServer(pki, tmp)
        self.addCleanup(moto.stop)
        moto.wait_ready()
        s3 = boto3.client("s3", region_name="us-west-2", endpoint_url=f"https://localhost:{moto.port}",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          verify=pki.ca_file,
                          config=Config(s3={"addressing_style": "path"}, proxies={},
                                        retries={"max_attempts": 1}))
        s3.create_bucket(Bucket="direct", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        s3.put_object(Bucket="direct", Key="k", Body=b"v")
        self.assertEqual(s3.get_object(Bucket="direct", Key="k")["Body"].read(), b"v")


if __name__ == "__main__":
    unittest.main()
