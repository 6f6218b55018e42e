"""Every denial and failure the first cut can reach: status, Proxy-Status,
Connection: close, a one-line body and the access-log line; then the command
line (--check, --print-default-config, --version, --help, explain)."""

import os
import re
import select
import time
import unittest

import harness as h


class ErrorTest(h.ProxyTestCase):
    def connect_denied(self, target, status, error, details, decision="deny", **log):
        """CONNECT `target`, expect an error answer and its access-log line."""
        sock, resp = h.proxy_connect(self.proxy.port, target)
        client = h.client_name(sock)
        sock.close()
        body = self.assert_error(resp, status, error, details)
        self.assertEqual(resp.end, "eof", "the proxy did not close after the error")
        rec = self.proxy.log_for_client(client)
        fields = dict(kind="connect", method="CONNECT", decision=decision, reason=details,
                      status=status, bytes_up=0, bytes_down=0)
        fields.update(log)
        self.assert_log(rec, **fields)
        self.assert_settled()
        return body, rec

    def raw_denied(self, data, status, error, details, **log):
        resp, client = h.send_raw(self.proxy.port, data)
        body = self.assert_error(resp, status, error, details)
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, decision="deny", reason=details, status=status, **log)
        self.assert_settled()
        return body, rec

    # ------------------------------------------------------------ policy (403)

    def test_client_not_allowed(self):
        # SPEC section 3: refused as soon as the address is known, before any
        # request head (a non-client holds no slot for header_timeout).
        self.start_proxy({"clients": ["10.0.0.0/8"], "limits": {"header_timeout": "30s"}})
        started = time.monotonic()
        resp, client = h.send_raw(self.proxy.port, b"")
        self.assertLess(time.monotonic() - started, 5.0, "the refusal waited for a request head")
        self.assert_error(resp, 403, "http_request_denied", "client_not_allowed")
        self.assertEqual(resp.end, "eof", "the proxy did not close after the error")
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, kind="connect", method="-", decision="deny",
                        reason="client_not_allowed", status=403, bytes_up=0, bytes_down=0)
        # A request sent at once meets the same refusal, decided before DNS.
        self.connect_denied(f"{h.s3_name('media')}:{self.echo.port}", 403, "http_request_denied",
                            "client_not_allowed", method="-")
        self.assertEqual(self.dns.query_count(), 0, "DNS was asked before the decision")

    def test_host_not_allowed(self):
        self.start_proxy()
        self.connect_denied("example.com:443", 403, "http_request_denied", "host_not_allowed",
                            host="example.com", port=443)
        self.assertEqual(self.dns.query_count(), 0)

    def test_hosts_entry_allows_other_name(self):
        self.start_proxy({"hosts": [{"name": "sts.us-west-2.amazonaws.com", "ports": [self.echo.port]}]})
        sock, resp = h.proxy_connect(self.proxy.port, f"sts.us-west-2.amazonaws.com:{self.echo.port}")
        self.addCleanup(sock.close)
        self.assertEqual(resp.status, 200, repr(resp))
        self.assertEqual(h.echo_roundtrip(sock, b"sts"), b"sts")
        client = h.client_name(sock)
        sock.close()
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, decision="allow", rule="-", bucket=None, status=200)
        self.assert_settled()

    def test_hosts_entry_port_not_allowed(self):
        self.start_proxy({"hosts": [{"name": "sts.us-west-2.amazonaws.com", "ports": [443]}]})
        self.connect_denied(f"sts.us-west-2.amazonaws.com:{self.echo.port}", 403,
                            "http_request_denied", "port_not_allowed")

    def test_region_not_allowed(self):
        self.start_proxy({"s3": {"regions": ["us-west-2"]}})
        body, _ = self.connect_denied(f"{h.s3_name('media', 'eu-west-1')}:{self.echo.port}", 403,
                                      "http_request_denied", "region_not_allowed")
        self.assertIn("eu-west-1", body, "the body names the region")
        self.assertIn("us-west-2", body, "the body names the regions served")

    def test_global_endpoint_is_region_not_allowed(self):
        self.start_proxy({"s3": {"regions": ["us-west-2"]}})
        self.connect_denied(f"media.s3.amazonaws.com:{self.echo.port}", 403,
                            "http_request_denied", "region_not_allowed")

    def test_bucket_not_allowed(self):
        self.start_proxy()
        self.connect_denied(f"{h.s3_name('secret')}:{self.echo.port}", 403, "http_request_denied",
                            "bucket_not_allowed", host=h.s3_name("secret"), bucket="secret")
        self.assertEqual(self.dns.query_count(), 0)

    def test_bucket_rule_narrowed_by_clients(self):
        self.start_proxy({"buckets": [{"name": "media", "clients": ["10.0.0.0/8"]}]})
        self.connect_denied(f"{h.s3_name('media')}:{self.echo.port}", 403, "http_request_denied",
                            "bucket_not_allowed")

    def test_path_style_connect_denied(self):
        self.start_proxy({"s3": {"path_style": "deny"}})
        self.connect_denied(f"s3.us-west-2.amazonaws.com:{self.echo.port}", 403,
                            "http_request_denied", "path_style_denied")

    def test_port_not_allowed(self):
        self.start_proxy()
        self.connect_denied(f"{h.s3_name('media')}:443", 403, "http_request_denied", "port_not_allowed",
                            port=443)

    def test_ip_literal_denied(self):
        self.start_proxy()
        self.connect_denied(f"127.0.0.1:{self.echo.port}", 403, "http_request_denied",
                            "ip_literal_denied")
        self.connect_denied(f"[::1]:{self.echo.port}", 403, "http_request_denied", "ip_literal_denied")
        self.connect_denied(f"2130706433:{self.echo.port}", 403, "http_request_denied",
                            "ip_literal_denied")  # 127.0.0.1 as one decimal number

    # ------------------------------------------------------------ bad input (400, 431, 408)

    def test_bad_host(self):
        self.start_proxy()
        for host in ("a..b.s3.us-west-2.amazonaws.com", ("x" * 64) + ".s3.us-west-2.amazonaws.com",
                     "bad!name.s3.us-west-2.amazonaws.com"):
            with self.subTest(host=host):
                self.connect_denied(f"{host}:{self.echo.port}", 400, "http_request_error", "bad_host")

    def test_bad_request_garbage(self):
        self.start_proxy()
        self.raw_denied(b"\x16\x03\x01\x00\xa5garbage that is not HTTP\r\n\r\n", 400,
                        "http_request_error", "bad_request")

    def test_bad_request_connect_without_port(self):
        # SPEC leaves open whether a CONNECT target without a port is bad_request or bad_host;
        # Squid answers 400 either way, so either reason is accepted.
        self.start_proxy()
        resp, client = h.send_raw(self.proxy.port,
                                  b"CONNECT media.s3.us-west-2.amazonaws.com HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(resp.status, 400, repr(resp))
        details = resp.proxy_status().get("details")
        self.assertIn(details, ("bad_request", "bad_host"))
        self.assert_error(resp, 400, "http_request_error", details)
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, decision="deny", reason=details, status=400)
        self.assert_settled()

    def test_bad_request_unsupported_form(self):
        # An origin-form request other than /ping is not a proxy request.
        self.start_proxy()
        resp, client = h.send_raw(self.proxy.port, b"GET /not-ping HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIsNotNone(resp)
        self.assertEqual(resp.status // 100, 4, repr(resp))
        self.assertIsNotNone(resp.proxy_status(), repr(resp))
        self.assert_settled()

    def test_header_too_large_bytes(self):
        self.start_proxy({"limits": {"max_header_bytes": 1024}})
        head = h.connect_request(f"{h.s3_name('media')}:{self.echo.port}", {"X-Pad": "a" * 2000})
        self.raw_denied(head, 431, "http_request_error", "header_too_large")

    def test_header_too_large_fields(self):
        self.start_proxy({"limits": {"max_headers": 10}})
        head = h.connect_request(f"{h.s3_name('media')}:{self.echo.port}",
                                 {f"X-F{i}": str(i) for i in range(20)})
        self.raw_denied(head, 431, "http_request_error", "header_too_large")

    def test_header_within_limits_passes(self):
        self.start_proxy({"limits": {"max_headers": 10, "max_header_bytes": 1024}})
        sock, resp = h.proxy_connect(self.proxy.port, f"{h.s3_name('media')}:{self.echo.port}",
                                     {f"X-F{i}": str(i) for i in range(5)})
        self.addCleanup(sock.close)
        self.assertEqual(resp.status, 200, repr(resp))
        sock.close()
        self.assert_settled()

    def test_header_timeout(self):
        self.start_proxy({"limits": {"header_timeout": "1s"}})
        sock = h.open_client(self.proxy.port)
        self.addCleanup(sock.close)
        client = h.client_name(sock)
        t0 = time.monotonic()
        sock.sendall(f"CONNECT {h.s3_name('media')}:{self.echo.port} HTTP/1.1\r\nHost: x".encode())
        resp = h.read_head(sock, timeout=10)
        elapsed = time.monotonic() - t0
        self.assertIsNotNone(resp, "closed without a 408")
        resp.body, resp.end = h.recv_until_eof(sock, 5)
        resp.body = resp.rest + resp.body
        self.assert_error(resp, 408, "http_request_error", "header_timeout")
        self.assertGreaterEqual(elapsed, 0.8)
        self.assertLess(elapsed, 5.0)
        sock.close()
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, decision="deny", reason="header_timeout", status=408)
        self.assert_settled()

    def test_header_timeout_trickle(self):
        # The whole head must arrive within header_timeout, however it trickles in.
        self.start_proxy({"limits": {"header_timeout": "1s"}})
        sock = h.open_client(self.proxy.port)
        self.addCleanup(sock.close)
        t0 = time.monotonic()
        lines = [f"CONNECT {h.s3_name('media')}:{self.echo.port} HTTP/1.1\r\n"]
        lines += [f"X-T{i}: {i}\r\n" for i in range(40)]
        for line in lines:  # one line every 0.1 s, for up to 4 s, until the proxy answers
            try:
                sock.sendall(line.encode())
            except OSError:
                break
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                break
        resp = h.read_head(sock, timeout=5)
        self.assertIsNotNone(resp)
        self.assertEqual(resp.status, 408)
        self.assertLess(time.monotonic() - t0, 4.0)
        sock.close()
        self.assert_settled()

    def test_idle_connection_without_request(self):
        # A connection that never sends anything is closed at header_timeout.
        self.start_proxy({"limits": {"header_timeout": "1s"}})
        sock = h.open_client(self.proxy.port)
        self.addCleanup(sock.close)
        data, how = h.recv_until_eof(sock, 6)
        self.assertIn(how, ("eof", "reset"), "an empty connection was kept open")
        sock.close()
        self.assert_settled()

    # ------------------------------------------------------------ upstream failures (502, 504)

    def test_upstream_refused(self):
        self.start_proxy()
        self.connect_denied(f"{h.s3_name('media')}:{self.refusing}", 502, "connection_refused",
                            "connect_failed", decision="allow", bucket="media")

    def test_connect_timeout(self):
        if not self.silent.works(0.3):
            self.skipTest("SYNs to a full listen queue are not dropped on this host")
        self.start_proxy({"limits": {"connect_timeout": "1s"}})
        t0 = time.monotonic()
        self.connect_denied(f"{h.s3_name('media')}:{self.silent.port}", 504, "connection_timeout",
                            "connect_timeout", decision="allow")
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 0.8)
        self.assertLess(elapsed, 6.0)

    # ------------------------------------------------------------ local answers and modes

    def test_ping(self):
        self.start_proxy()
        resp = h.http_get(self.proxy.port, "/ping")
        self.assertIsNotNone(resp)
        self.assertEqual(resp.status, 200, repr(resp))
        self.assertEqual(resp.body.strip(), b"OK")
        rec = self.proxy.wait_for_log(lambda r: r.get("kind") == "local")
        self.assert_log(rec, decision="allow", status=200)
        self.assert_settled()

    def test_report_mode_lets_bucket_through(self):
        self.start_proxy({"mode": "report"})
        sock, resp = h.proxy_connect(self.proxy.port, f"{h.s3_name('secret')}:{self.echo.port}")
        self.addCleanup(sock.close)
        self.assertEqual(resp.status, 200, repr(resp))
        self.assertEqual(h.echo_roundtrip(sock, b"reported"), b"reported")
        client = h.client_name(sock)
        sock.close()
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, decision="report", reason="bucket_not_allowed", status=200, bucket="secret",
                        bytes_up=8, bytes_down=8)
        self.assert_settled()

    def test_report_mode_still_enforces_bad_input(self):
        self.start_proxy({"mode": "report"})
        self.connect_denied(f"a..b.s3.us-west-2.amazonaws.com:{self.echo.port}", 400,
                            "http_request_error", "bad_host")

    def test_denials_in_a_row_keep_process_healthy(self):
        self.start_proxy()
        for i in range(30):
            sock, resp = h.proxy_connect(self.proxy.port, f"{h.s3_name('nope%d' % i)}:{self.echo.port}")
            sock.close()
            self.assertEqual(resp.status, 403)
        h.wait_until(lambda: len([r for r in self.proxy.access_lines()
                                  if r.get("reason") == "bucket_not_allowed"]) >= 30, 5,
                     message="30 log lines")
        self.assert_settled()


class CommandLineTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if h.s3gate_binary() is None:
            reason = "no s3gate binary (build it or set S3GATE_BIN)"
            print(f"SKIP {cls.__name__}: {reason}")
            raise unittest.SkipTest(reason)
        import tempfile
        cls.tmp = tempfile.mkdtemp(prefix="s3gate-cli-")

    @classmethod
    def tearDownClass(cls):
        import shutil
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def good_config(self):
        return h.to_yaml(h.base_config(3128, 9464, 53, [443]))

    def test_check_good(self):
        path = self.write("good.yaml", self.good_config())
        r = h.run_s3gate(["-c", path, "--check"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("configuration OK", r.stdout + r.stderr)

    def check_bad(self, name, text, line, col, key):
        path = self.write(name, text)
        r = h.run_s3gate(["-c", path, "--check"])
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 1, out)
        self.assertNotIn("configuration OK", out)
        pattern = rf"^{re.escape(path)}:{line}:{col}: {re.escape(key)}: \S"
        self.assertRegex(out, re.compile(pattern, re.M), "error message format FILE:LINE:COL: key: ...")
        return out

    def test_check_bad_access_value(self):
        text = ('version: 1\nlisteners:\n  - address: "127.0.0.1:3128"\nbuckets:\n'
                '  - name: media\n  - name: other\n    access: rw\n')
        out = self.check_bad("bad-access.yaml", text, 7, 5, "buckets[1].access")
        self.assertIn("rw", out)

    def test_check_unknown_key(self):
        text = 'version: 1\nlistners:\n  - address: "127.0.0.1:3128"\n'
        self.check_bad("unknown-key.yaml", text, 2, 1, "listners")

    def test_check_unknown_nested_key(self):
        text = ('version: 1\nlisteners:\n  - address: "127.0.0.1:3128"\nlimits:\n'
                '  idle_timeout: 5s\n  idle_timout: 5s\n')
        self.check_bad("unknown-nested.yaml", text, 6, 3, "limits.idle_timout")

    def test_check_bad_duration(self):
        text = 'version: 1\nlisteners:\n  - address: "127.0.0.1:3128"\nlimits:\n  header_timeout: 5\n'
        self.check_bad("bad-duration.yaml", text, 5, 3, "limits.header_timeout")

    def test_check_bad_cidr(self):
        text = 'version: 1\nlisteners:\n  - address: "127.0.0.1:3128"\nclients: ["10.0.0.0/33"]\n'
        out = self.write("bad-cidr.yaml", text)
        r = h.run_s3gate(["-c", out, "--check"])
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stdout + r.stderr, re.compile(rf"^{re.escape(out)}:4:\d+: clients", re.M))

    def test_check_missing_file(self):
        r = h.run_s3gate(["-c", os.path.join(self.tmp, "does-not-exist.yaml"), "--check"])
        self.assertEqual(r.returncode, 1)
        self.assertIn("does-not-exist.yaml", r.stdout + r.stderr)

    def test_check_no_listener(self):
        r = h.run_s3gate(["-c", self.write("no-listener.yaml", "version: 1\nlisteners: []\n"), "--check"])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)

    def test_check_bad_yaml_syntax(self):
        path = self.write("syntax.yaml", 'version: 1\nlisteners: [\n  - "oops\n')
        r = h.run_s3gate(["-c", path, "--check"])
        self.assertEqual(r.returncode, 1)
        self.assertIn(path, r.stdout + r.stderr)

    def test_run_with_bad_config_exits_nonzero(self):
        path = self.write("bad-run.yaml", 'version: 1\nlistners: []\n')
        r = h.run_s3gate(["-c", path], timeout=10)  # must exit, not serve
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("listners", r.stdout + r.stderr)

    def test_print_default_config_reloads(self):
        r = h.run_s3gate(["--print-default-config"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("listeners", r.stdout)
        self.assertIn("127.0.0.1:3128", r.stdout)
        path = self.write("default.yaml", r.stdout)
        c = h.run_s3gate(["-c", path, "--check"])
        self.assertEqual(c.returncode, 0, c.stdout + c.stderr)
        self.assertIn("configuration OK", c.stdout + c.stderr)
        # and without -c: the embedded default checks too
        d = h.run_s3gate(["--check"])
        self.assertEqual(d.returncode, 0, d.stdout + d.stderr)

    def test_version(self):
        r = h.run_s3gate(["--version"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"s3gate.*\d+\.\d+\.\d+")

    def test_help(self):
        r = h.run_s3gate(["--help"])
        self.assertEqual(r.returncode, 0, r.stderr)
        for word in ("--check", "explain", "--print-default-config", "--version"):
            self.assertIn(word, r.stdout)

    def test_unknown_option(self):
        r = h.run_s3gate(["--no-such-option"])
        self.assertNotEqual(r.returncode, 0)

    def explain(self, *args, overrides=None):
        cfg = h.deep_merge(h.base_config(3128, 9464, 53, [443]), overrides or {})
        path = self.write("explain.yaml", h.to_yaml(cfg))
        r = h.run_s3gate(["-c", path, "explain"] + list(args))
        return r.returncode, (r.stdout + r.stderr)

    def test_explain_table(self):
        media = h.s3_name("media")
        cases = [
            # (client, method, target, exit, words the output must contain)
            ("127.0.0.1", "CONNECT", f"{media}:443", 0, ["allow", "media", "us-west-2"]),
            ("127.0.0.1", "CONNECT", f"{h.s3_name('secret')}:443", 1, ["deny", "bucket_not_allowed"]),
            ("10.1.2.3", "CONNECT", f"{media}:443", 1, ["deny", "client_not_allowed"]),
            ("127.0.0.1", "CONNECT", f"{media}:8443", 1, ["deny", "port_not_allowed"]),
            ("127.0.0.1", "CONNECT", "example.com:443", 1, ["deny", "host_not_allowed"]),
            ("127.0.0.1", "CONNECT", "127.0.0.1:443", 1, ["deny", "ip_literal_denied"]),
            ("127.0.0.1", "CONNECT", "a..b.s3.us-west-2.amazonaws.com:443", 1, ["deny", "bad_host"]),
            ("127.0.0.1", "GET", f"http://{h.s3_name('ro-x')}/shot/010.exr", 0, ["allow", "ro-*"]),
            ("127.0.0.1", "PUT", f"http://{h.s3_name('ro-x')}/shot/010.exr", 1, ["deny", "method_not_allowed"]),
            ("127.0.0.1", "PUT", f"http://{media}/shot/010.exr", 0, ["allow"]),
            ("127.0.0.1", "GET", "http://s3.us-west-2.amazonaws.com/media/k", 0, ["allow", "media"]),
            ("127.0.0.1", "GET", "http://s3.us-west-2.amazonaws.com/secret/k", 1, ["bucket_not_allowed"]),
            ("127.0.0.1", "GET", f"http://{media}:8080/k", 1, ["port_not_allowed"]),
        ]
        for client, method, target, code, words in cases:
            # No subTest: a command that hangs fails the table at once instead of 13 times.
            rc, out = self.explain(client, method, target)
            with self.subTest(target=target, method=method, client=client):
                self.assertEqual(rc, code, out)
                for w in words:
                    self.assertIn(w, out)

    def test_explain_region(self):
        rc, out = self.explain("127.0.0.1", "CONNECT", f"{h.s3_name('media', 'eu-west-1')}:443",
                               overrides={"s3": {"regions": ["us-west-2"]}})
        self.assertEqual(rc, 1, out)
        self.assertIn("region_not_allowed", out)
        self.assertIn("eu-west-1", out)

    def test_explain_report_mode(self):
        rc, out = self.explain("127.0.0.1", "CONNECT", f"{h.s3_name('secret')}:443",
                               overrides={"mode": "report"})
        self.assertEqual(rc, 0, out)
        self.assertIn("report", out)
        self.assertIn("bucket_not_allowed", out)


if __name__ == "__main__":
    unittest.main()
