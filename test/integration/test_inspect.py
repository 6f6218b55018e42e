"""Inspect mode (tunnel.inspect, SPEC sections 2 and 3): s3gate completes the
client's TLS inside CONNECT tunnels to S3 names with a certificate the test CA
issued, decides every request inside, and sends it on to moto over verified
TLS. Real clients (the aws CLI, boto3) trust the CA through AWS_CA_BUNDLE."""

import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import unittest

import harness as h

MISSING = h.moto_available()
MEDIA = h.s3_name("media")


def tls_client(proxy_port, host, port, ca_file, timeout=15):
    """CONNECT host:port through the proxy, then TLS with SNI host, trusting ca_file."""
    sock, resp = h.proxy_connect(proxy_port, f"{host}:{port}", timeout=timeout)
    if resp.status != 200:
        sock.close()
        return None, resp
    ctx = ssl.create_default_context(cafile=ca_file)
    return ctx.wrap_socket(sock, server_hostname=host), resp


def request(sock, method, path, host, body=b"", headers=()):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    resp = h.read_head(sock, timeout=15)
    if resp is None:
        raise AssertionError(f"no answer to {method} {host}{path}")
    length = int(resp.headers.get("content-length", ["0"])[0])
    body_in = resp.rest
    while len(body_in) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body_in += chunk
    resp.body = body_in[:length]
    return resp


@unittest.skipIf(MISSING is not None, MISSING or "")
class InspectTest(h.MotoMixin, h.ProxyTestCase):
    AWS_CONFIG_EXTRA = "    multipart_threshold = 8MB\n    multipart_chunksize = 8MB\n"

    def start_inspecting(self, extra=None):
        cfg = {
            "http": {"ca_file": self.pki.ca_file},
            "tunnel": {"inspect": True, "inspect_certificate": self.pki.cert_file,
                       "inspect_private_key": self.pki.key_file},
            "buckets": [{"name": "media"}, {"name": "ro-*", "access": "read-only"}],
        }
        return self.start_proxy(h.deep_merge(cfg, extra or {}))

    def s3(self):
        import boto3
        from botocore.config import Config
        return boto3.client(
            "s3", region_name=h.REGION, endpoint_url=self.endpoint,
            aws_access_key_id="testing", aws_secret_access_key="testing",
            verify=self.pki.ca_file,
            config=Config(proxies={"https": f"http://127.0.0.1:{self.proxy.port}"},
                          s3={"addressing_style": "virtual"}, retries={"max_attempts": 1}))

    def aws(self, *args, timeout=180):
        return self.run_aws(args, timeout=timeout)

    def make_buckets(self, *names):
        import botocore.exceptions
        # Created straight at moto, not through the proxy (the rules may refuse).
        import boto3
        direct = boto3.client("s3", region_name=h.REGION, endpoint_url=f"https://localhost:{self.moto.port}",
                              aws_access_key_id="testing", aws_secret_access_key="testing",
                              verify=self.pki.ca_file)
        for name in names:
            try:
                direct.create_bucket(Bucket=name,
                                     CreateBucketConfiguration={"LocationConstraint": h.REGION})
            except botocore.exceptions.ClientError as exc:
                if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou",
                                                         "BucketAlreadyExists"):
                    raise
        return direct

    def inspect_lines(self):
        return [r for r in self.proxy.access_lines() if r.get("kind") == "inspect"]

    def test_aws_cli_ls_and_64mib_multipart_round_trip(self):
        if shutil.which("aws") is None:
            self.skipTest("the aws CLI is not installed")
        self.make_buckets("media")
        self.start_inspecting()
        data = os.urandom(64 << 20)
        src = os.path.join(self.workdir, "src.bin")
        back = os.path.join(self.workdir, "back.bin")
        with open(src, "wb") as f:
            f.write(data)
        r = self.aws("s3", "cp", src, "s3://media/shot/big.bin")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = self.aws("s3", "ls", "s3://media/shot/")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("big.bin", r.stdout)
        r = self.aws("s3", "cp", "s3://media/shot/big.bin", back)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(back, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), hashlib.sha256(data).hexdigest())
        # A response reaches the client before its line is written: wait for
        # the download's lines (ranged GETs) to add up to the object.
        h.wait_until(lambda: sum(r["bytes_down"] for r in self.inspect_lines()
                                 if r["method"] == "GET") >= 64 << 20,
                     5, message="the download's log lines")
        lines = self.inspect_lines()
        methods = {r["method"] for r in lines}
        self.assertTrue({"PUT", "POST", "GET"} <= methods, methods)  # parts, create/complete, get
        self.assertTrue(all(r["decision"] == "allow" and r["bucket"] == "media" for r in lines))
        up = sum(r["bytes_up"] for r in lines if r["method"] == "PUT")
        self.assertGreaterEqual(up, 64 << 20)
        text = self.metrics_text()
        self.assertGreaterEqual(h.metric_value(text, "s3gate_requests_total", kind="inspect",
                                               decision="allow"), len(lines))
        self.assertGreaterEqual(h.metric_value(text, "s3gate_bucket_bytes_total", rule="media",
                                               direction="up"), 64 << 20)

    def test_forbidden_bucket_inside_an_allowed_tunnel(self):
        self.make_buckets("media", "secret")
        self.start_inspecting()
        sock, resp = tls_client(self.proxy.port, MEDIA, self.moto.port, self.pki.ca_file)
        self.assertIsNotNone(sock, resp)
        self.addCleanup(sock.close)
        other = request(sock, "GET", "/", f"{h.s3_name('secret')}:{self.moto.port}")
        self.assertEqual(other.status, 403)
        self.assertIn('details="bucket_not_allowed"', other.headers["proxy-status"][0])
        # The same tunnel carries the next, allowed request.
        ok = request(sock, "GET", "/", f"{MEDIA}:{self.moto.port}")
        self.assertEqual(ok.status, 200, ok.body[:300])
        # Path-style inside a tunnel to the endpoint: decided by the path's bucket.
        sock2, resp = tls_client(self.proxy.port, f"s3.{h.REGION}.amazonaws.com", self.moto.port,
                                 self.pki.ca_file)
        self.assertIsNotNone(sock2, resp)
        self.addCleanup(sock2.close)
        host = f"s3.{h.REGION}.amazonaws.com:{self.moto.port}"
        self.assertEqual(request(sock2, "GET", "/secret/k", host).status, 403)
        self.assertEqual(request(sock2, "GET", "/media", host).status, 200)
        h.wait_until(lambda: len(self.inspect_lines()) >= 4, 5, message="four inspect lines")
        reasons = [r["reason"] for r in self.inspect_lines()]
        self.assertEqual(reasons.count("bucket_not_allowed"), 2, reasons)

    def test_read_only_rule_denies_put_and_delete_inside(self):
        self.make_buckets("ro-plates")
        self.start_inspecting()
        host = h.s3_name("ro-plates")
        sock, resp = tls_client(self.proxy.port, host, self.moto.port, self.pki.ca_file)
        self.assertIsNotNone(sock, resp)
        self.addCleanup(sock.close)
        authority = f"{host}:{self.moto.port}"
        put = request(sock, "PUT", "/a.exr", authority, body=b"x" * 100000)
        self.assertEqual(put.status, 403)
        self.assertIn('details="method_not_allowed"', put.headers["proxy-status"][0])
        # The denied body was dropped: the next request on the tunnel is read cleanly.
        delete = request(sock, "DELETE", "/a.exr", authority)
        self.assertEqual(delete.status, 403)
        get = request(sock, "GET", "/", authority)
        self.assertEqual(get.status, 200)

    def test_reload_reaches_an_open_tunnel(self):
        self.make_buckets("media")
        self.start_inspecting()
        sock, resp = tls_client(self.proxy.port, MEDIA, self.moto.port, self.pki.ca_file)
        self.assertIsNotNone(sock, resp)
        self.addCleanup(sock.close)
        authority = f"{MEDIA}:{self.moto.port}"
        self.assertEqual(request(sock, "GET", "/", authority).status, 200)
        cfg = dict(self.proxy.config)
        cfg["buckets"] = [{"name": "other"}]
        self.proxy.write_config(cfg)
        self.proxy.signal(signal.SIGHUP)
        h.wait_until(lambda: h.metric_value(self.metrics_text(), "s3gate_config_reloads_total",
                                            result="success") == 1, 5, message="reload")
        denied = request(sock, "GET", "/", authority)
        self.assertEqual(denied.status, 403)
        self.assertIn('details="bucket_not_allowed"', denied.headers["proxy-status"][0])

    def test_uncovered_names(self):
        dotted = h.s3_name("my.dotted.bucket")  # a wildcard covers one label only
        self.start_inspecting({"buckets": [{"name": "*"}]})
        sock, resp = h.proxy_connect(self.proxy.port, f"{dotted}:{self.moto.port}")
        sock.close()
        self.assert_error(resp, 403, "http_request_denied", "inspect_not_covered")
        self.proxy.stop()
        self.start_inspecting({"buckets": [{"name": "*"}], "tunnel": {"inspect_uncovered": "blind"}})
        sock, resp = h.proxy_connect(self.proxy.port, f"{dotted}:{self.moto.port}")
        self.addCleanup(sock.close)
        self.assertEqual(resp.status, 200, "relayed blind")
        # Blind: the upstream's own certificate answers (moto's; it does not cover the name).
        ctx = ssl.create_default_context(cafile=self.pki.ca_file)
        ctx.check_hostname = False
        with ctx.wrap_socket(sock, server_hostname=dotted) as t:
            self.assertIsNotNone(t.getpeercert())

    def test_client_that_does_not_trust_the_ca(self):
        self.start_inspecting()
        sock, resp = h.proxy_connect(self.proxy.port, f"{MEDIA}:{self.moto.port}")
        self.assertEqual(resp.status, 200)
        name = h.client_name(sock)
        ctx = ssl.create_default_context()  # the system store: no test CA
        with self.assertRaises(ssl.SSLError):
            ctx.wrap_socket(sock, server_hostname=MEDIA)
        sock.close()
        rec = self.proxy.log_for_client(name)
        self.assert_log(rec, kind="connect", close="tls_handshake_failed", status=200)

    def test_sni_must_name_the_connect_host(self):
        self.start_inspecting()
        sock, resp = h.proxy_connect(self.proxy.port, f"{MEDIA}:{self.moto.port}")
        name = h.client_name(sock)
        ctx = ssl.create_default_context(cafile=self.pki.ca_file)
        ctx.check_hostname = False
        # The handshake may complete (the certificate covers the other name too);
        # then s3gate closes before any request is read.
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError, AssertionError)):
            t = ctx.wrap_socket(sock, server_hostname=h.s3_name("ro-other"))
            request(t, "GET", "/", f"{MEDIA}:{self.moto.port}")
        sock.close()
        rec = self.proxy.log_for_client(name)
        self.assert_log(rec, kind="connect", decision="deny", reason="sni_mismatch")

    def test_boto3_inside_inspected_tunnels(self):
        self.make_buckets("media")
        self.start_inspecting()
        s3 = self.s3()
        s3.put_object(Bucket="media", Key="k", Body=b"hello")
        self.assertEqual(s3.get_object(Bucket="media", Key="k")["Body"].read(), b"hello")
        import botocore.exceptions
        with self.assertRaises(botocore.exceptions.ClientError) as err:
            s3.copy_object(Bucket="media", Key="copy", CopySource={"Bucket": "secret", "Key": "k"})
        self.assertEqual(err.exception.response["ResponseMetadata"]["HTTPStatusCode"], 403)
        # The 403 reaches the client before its line is written: wait for the line.
        rec = h.wait_until(lambda: [r for r in self.inspect_lines() if r.get("copy_source")], 5,
                           message="the copy's log line")[-1]
        self.assertEqual(rec["reason"], "copy_source_not_allowed")


if __name__ == "__main__":
    unittest.main()
