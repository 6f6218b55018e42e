"""What a reload reaches, and what is decided when (SPEC sections 1 and 3).

- a bucket rule removed by SIGHUP denies the next request on a kept-alive
  connection opened before the reload (and the next CONNECT on a new one);
- a reload that moves DNS to another server sends the next lookups there;
- a reload that moves the access log writes the next lines to the new file;
- --check refuses exactly what start-up refuses (a missing certificate,
  an inspection certificate) and prints the warnings for risky settings;
- a client outside `clients` is answered at once, before any request head;
- a client that closes an allowed tunnel before a byte is allow/client_eof;
- an IPv4-mapped PROXY source is the IPv4 address.
"""

import os
import signal
import socket
import subprocess
import time
import unittest

import harness as h

MEDIA = h.s3_name("media")


def reloaded(test, count=1):
    h.wait_until(lambda: h.metric_value(test.metrics_text(), "s3gate_config_reloads_total",
                                        result="success") == count, 5,
                 message=f"{count} successful reload(s)")


class KeptAliveReloadTest(h.ForwardTestCase):
    def test_revoked_bucket_denied_on_kept_alive_connection(self):
        up = self.upstream(responder=lambda req: [h.http_response(200, b"ok")])
        self.start_forward(up, {"buckets": [{"name": "media"}, {"name": "other"}]})
        c = self.client()
        for _ in range(3):
            c.send(h.http_request("GET", f"http://{MEDIA}/shot/010.exr"))
            self.assertEqual(c.read_response().status, 200)
        cfg = dict(self.proxy.config)
        cfg["buckets"] = [{"name": "other"}]
        self.proxy.write_config(cfg)
        self.proxy.signal(signal.SIGHUP)
        reloaded(self)
        # The same connection, opened under the old configuration: the next
        # request is decided against the new one.
        c.send(h.http_request("GET", f"http://{MEDIA}/shot/010.exr"))
        reply = c.read_response()
        self.assert_error(reply, 403, "http_request_denied", "bucket_not_allowed")
        lines = self.log_lines(c, 4)
        self.assertEqual([r["decision"] for r in lines], ["allow"] * 3 + ["deny"], lines)
        self.assertEqual(lines[-1]["reason"], "bucket_not_allowed")
        self.assertEqual(len(up.requests), 3, "the denied request reached the upstream")
        # A bucket the new file allows works on a new connection.
        c2 = self.client()
        c2.send(h.http_request("GET", f"http://{h.s3_name('other')}/a"))
        self.assertEqual(c2.read_response().status, 200)


class CopySourceTest(h.ForwardTestCase):
    def test_copy_sources_decided_as_a_get(self):
        up = self.upstream(responder=lambda req: [h.http_response(200, b"copied")])
        self.start_forward(up, {"buckets": [{"name": "media"}, {"name": "ro-*", "access": "read-only"}]})
        cases = [
            ("/ro-plates/a.exr", 200, None),                    # a read-only rule is enough
            ("ro-plates%2Fb.exr?versionId=3", 200, None),       # URL-encoded, with a version
            ("ro-plates/c%20d.exr", 200, None),                 # no leading slash
            ("/secret/a.exr", 403, "copy_source_not_allowed"),  # no rule covers it
            ("arn:aws:s3:us-west-2:111122223333:accesspoint/media-ap/object/k", 403,
             "copy_source_not_allowed"),                       # no hosts entry for its endpoint
            ("/", 400, "bad_request"),                          # unreadable: refused in any mode
        ]
        for value, status, reason in cases:
            with self.subTest(value=value):
                before = len(up.requests)
                c = self.client()
                c.send(h.http_request("PUT", f"http://{MEDIA}/dst.exr",
                                      headers=[("x-amz-copy-source", value)]))
                reply = c.read_response()
                self.assertEqual(reply.status, status, reply)
                rec = self.log_lines(c, 1)[-1]
                self.assertIn("copy_source", rec)
                if reason:
                    self.assertEqual(rec["reason"], reason)
                    self.assertEqual(len(up.requests), before, "a denied copy reached the upstream")
                else:
                    self.assertEqual(rec["decision"], "allow")
                    self.assertEqual(len(up.requests), before + 1)
        c = self.client()
        c.send(h.http_request("PUT", f"http://{MEDIA}/dst.exr",
                              headers=[("x-amz-copy-source", "/media/a"),
                                       ("x-amz-copy-source", "/secret/a")]))
        self.assertEqual(c.read_response().status, 400, "two copy sources")


class S3NamesThroughTheBinaryTest(h.ProxyTestCase):
    def test_express_names_host_globs_and_user_agent(self):
        self.start_proxy({
            "buckets": [{"name": "scratch--*--x-s3"}],
            "hosts": [{"name": "sts.*.amazonaws.com", "ports": [self.echo.port]}],
        })
        zonal = f"scratch--usw2-az1--x-s3.s3express-usw2-az1.{h.REGION}.amazonaws.com"
        sock, resp = h.proxy_connect(self.proxy.port, f"{zonal}:{self.echo.port}",
                                     headers={"User-Agent": "aws-cli/2.15 md/Botocore#2.0"})
        name = h.client_name(sock)
        sock.close()
        self.assertEqual(resp.status, 200, resp)
        rec = self.proxy.log_for_client(name)
        self.assert_log(rec, decision="allow", bucket="scratch--usw2-az1--x-s3",
                        rule="scratch--*--x-s3", user_agent="aws-cli/2.15 md/Botocore#2.0")
        other_zone = f"scratch--use1-az4--x-s3.s3express-usw2-az1.{h.REGION}.amazonaws.com"
        sock, resp = h.proxy_connect(self.proxy.port, f"{other_zone}:{self.echo.port}")
        sock.close()
        self.assert_error(resp, 403, "http_request_denied", "host_not_allowed")
        sock, resp = h.proxy_connect(self.proxy.port, f"sts.eu-west-1.amazonaws.com:{self.echo.port}")
        sock.close()
        self.assertEqual(resp.status, 200, "a glob label matches one whole label")
        for name in ("sts.amazonaws.com", "sts.a.b.amazonaws.com"):
            sock, resp = h.proxy_connect(self.proxy.port, f"{name}:{self.echo.port}")
            sock.close()
            self.assert_error(resp, 403, "http_request_denied", "host_not_allowed")
        sock, resp = h.proxy_connect(self.proxy.port, f"{zonal}:{self.echo.port}")
        name = h.client_name(sock)
        sock.close()
        self.assertNotIn("user_agent", self.proxy.log_for_client(name), "absent when none is sent")


class ReloadReachTest(h.ProxyTestCase):
    def test_reload_moves_dns_to_another_server(self):
        second = h.DnsServer()
        self.addCleanup(second.stop)
        self.start_proxy({"dns": {"max_ttl": "1s", "min_ttl": "0s"}})
        sock, resp = h.proxy_connect(self.proxy.port, f"{MEDIA}:{self.echo.port}")
        sock.close()
        self.assertEqual(resp.status, 200)
        self.assertGreaterEqual(self.dns.query_count(), 1)
        cfg = dict(self.proxy.config)
        cfg["dns"] = dict(cfg["dns"], servers=[f"{h.LOOPBACK}:{second.port}"])
        self.proxy.write_config(cfg)
        self.proxy.signal(signal.SIGHUP)
        reloaded(self)
        before_first = self.dns.query_count()
        # A name never looked up before: only the new server may be asked.
        other = h.s3_name("media-new")
        cfg_buckets = self.proxy.config["buckets"]
        self.assertTrue(any(b["name"] == "media" for b in cfg_buckets))
        sock, resp = h.proxy_connect(self.proxy.port, f"{other}:{self.echo.port}")
        sock.close()
        self.assert_error(resp, 403, "http_request_denied", "bucket_not_allowed")  # no rule
        cfg["buckets"] = [{"name": "media"}, {"name": "media-new"}]
        self.proxy.write_config(cfg)
        self.proxy.signal(signal.SIGHUP)
        reloaded(self, 2)
        sock, resp = h.proxy_connect(self.proxy.port, f"{other}:{self.echo.port}")
        self.addCleanup(sock.close)
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(h.echo_roundtrip(sock, b"via the second server"), b"via the second server")
        self.assertGreaterEqual(second.query_count(other), 1, "the new server was not asked")
        self.assertEqual(self.dns.query_count(), before_first, "the old server was still asked")

    def test_reload_moves_the_access_log(self):
        first = os.path.join(self.workdir, "first.log")
        second = os.path.join(self.workdir, "second.log")
        self.start_proxy({"access_log": first})
        sock, resp = h.proxy_connect(self.proxy.port, f"{MEDIA}:{self.echo.port}")
        sock.close()
        h.wait_until(lambda: os.path.exists(first) and os.path.getsize(first) > 0, 5,
                     message="a line in the first log")
        cfg = dict(self.proxy.config)
        cfg["access_log"] = second
        self.proxy.write_config(cfg)
        self.proxy.signal(signal.SIGHUP)
        reloaded(self)
        size_first = os.path.getsize(first)
        sock, resp = h.proxy_connect(self.proxy.port, f"{MEDIA}:{self.echo.port}")
        name = h.client_name(sock)
        sock.close()
        h.wait_until(lambda: os.path.exists(second) and name in open(second).read(), 5,
                     message="the next line in the new log")
        self.assertEqual(os.path.getsize(first), size_first, "a line went to the old log")

    def test_client_outside_clients_refused_before_any_head(self):
        self.start_proxy({"clients": ["10.0.0.0/8"], "limits": {"header_timeout": "30s"}})
        sock = h.open_client(self.proxy.port)
        self.addCleanup(sock.close)
        started = time.monotonic()
        resp = h.read_head(sock, timeout=5)  # nothing sent
        self.assertIsNotNone(resp)
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(resp.status, 403)
        self.assertIn('details="client_not_allowed"', resp.headers["proxy-status"][0])

    def test_tunnel_closed_before_a_byte_is_client_eof(self):
        self.start_proxy({"tunnel": {"verify_sni": True}})
        sock, resp = h.proxy_connect(self.proxy.port, f"{MEDIA}:{self.echo.port}")
        name = h.client_name(sock)
        self.assertEqual(resp.status, 200)
        sock.close()
        rec = self.proxy.log_for_client(name)
        self.assert_log(rec, decision="allow", reason=None, close="client_eof", status=200)
        text = self.metrics_text()
        self.assertEqual(h.metric_value(text, "s3gate_denied_total", reason="sni_mismatch"), 0)
        self.assertEqual(h.metric_value(text, "s3gate_requests_total", kind="connect",
                                        decision="allow"), 1)

    def test_ipv4_mapped_proxy_source_is_the_ipv4_address(self):
        cfg = self.config({"clients": ["10.0.0.0/8"]})
        cfg["listeners"][0]["proxy_protocol"] = True
        self.start_proxy(config=cfg)
        sock = h.open_client(self.proxy.port)
        self.addCleanup(sock.close)
        sock.sendall(b"PROXY TCP6 ::ffff:10.1.2.3 ::1 5000 3128\r\n" +
                     h.connect_request(f"{MEDIA}:{self.echo.port}"))
        resp = h.read_head(sock)
        self.assertEqual(resp.status, 200, resp)
        sock.close()
        rec = self.proxy.log_for_client("10.1.2.3:5000")
        self.assert_log(rec, decision="allow")


class CheckParityTest(h.ProxyTestCase):
    def run_check(self, cfg):
        path = os.path.join(self.workdir, "check.yaml")
        with open(path, "w") as f:
            f.write(h.to_yaml(cfg))
        check = subprocess.run([h.s3gate_binary(), "-c", path, "--check"], capture_output=True,
                               text=True, timeout=30)
        start = subprocess.run([h.s3gate_binary(), "-c", path], capture_output=True, text=True,
                               timeout=30, env=h.clean_env())
        return check, start

    def test_missing_certificate_refused_by_check_and_start_alike(self):
        cfg = self.config()
        cfg["listeners"][0]["tls"] = {"certificate": "/nonexistent/proxy.pem",
                                      "private_key": "/nonexistent/proxy.key"}
        check, start = self.run_check(cfg)
        self.assertEqual(check.returncode, 1, check.stdout + check.stderr)
        self.assertNotIn("configuration OK", check.stdout)
        self.assertIn("listeners[0].tls", check.stderr)
        self.assertIn("/nonexistent/proxy.pem", check.stderr)
        self.assertEqual(start.returncode, 1, start.stderr)
        self.assertIn("listeners[0].tls", start.stderr)

    def test_missing_inspection_certificate_refused_by_check_and_start_alike(self):
        cfg = self.config({"tunnel": {"inspect": True,
                                      "inspect_certificate": "/nonexistent/inspect.pem",
                                      "inspect_private_key": "/nonexistent/inspect.key"}})
        check, start = self.run_check(cfg)
        self.assertEqual(check.returncode, 1, check.stdout + check.stderr)
        self.assertIn("tunnel.inspect_certificate", check.stderr)
        self.assertIn("/nonexistent/inspect.pem", check.stderr)
        self.assertEqual(start.returncode, 1)
        self.assertIn("tunnel.inspect_certificate", start.stderr)

    def test_check_warns_of_risky_settings(self):
        cfg = self.config({"mode": "report", "trusted_proxies": []})
        cfg["listeners"][0]["proxy_protocol"] = True
        cfg["admin"] = {"address": f"0.0.0.0:{h.free_port()}"}
        path = os.path.join(self.workdir, "risky.yaml")
        with open(path, "w") as f:
            f.write(h.to_yaml(cfg))
        out = subprocess.run([h.s3gate_binary(), "-c", path, "--check"], capture_output=True,
                             text=True, timeout=30)
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "configuration OK"), out.stderr)
        for text in ("trusted_proxies is empty", "mode: report", "not a loopback address"):
            self.assertIn(text, out.stderr)


if __name__ == "__main__":
    unittest.main()
