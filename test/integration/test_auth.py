"""Proxy authentication (SPEC section 3, step 1a) through the real binary:
Proxy-Authorization: Basic against auth.users_file, 407 with Proxy-Authenticate,
the user as the identity in rules and logs, each hash kind, a users-file change
by SIGHUP, --check, s3gate_auth_total, and the event loop answering while
bcrypt runs; then curl, boto3 and the aws CLI with credentials in the proxy URL
against moto."""

import base64
import concurrent.futures
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest
import urllib.parse

import harness as h

MEDIA = h.s3_name("media")
REALM_HEADER = 'Basic realm="s3gate", charset="UTF-8"'


class _Libcrypt:
    """The system's libcrypt through ctypes (Python's crypt module is deprecated)."""

    def __init__(self):
        name = ctypes.util.find_library("crypt")
        self.lib = ctypes.CDLL(name) if name else None
        if self.lib is not None:
            self.lib.crypt_gensalt.restype = ctypes.c_char_p
            self.lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p,
                                               ctypes.c_int]
            self.lib.crypt.restype = ctypes.c_char_p
            self.lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        self.lock = threading.Lock()

    def hash(self, prefix, password, cost=0):
        with self.lock:  # crypt() keeps its result in static storage
            setting = self.lib.crypt_gensalt(prefix.encode(), cost, None, 0)
            if not setting:
                return None
            out = self.lib.crypt(password.encode(), setting)
            return out.decode() if out and out.startswith(b"$") else None


_LIBCRYPT = _Libcrypt()


def make_hash(kind, password, cost=0):
    """A users-file hash made by the system's tools: libcrypt, else mkpasswd, else
    openssl passwd -6 (SHA-512 only). None when nothing here can make it."""
    prefix = {"bcrypt-2b": "$2b$", "bcrypt-2y": "$2y$", "yescrypt": "$y$", "sha512": "$6$"}[kind]
    if _LIBCRYPT.lib is not None:
        value = _LIBCRYPT.hash(prefix, password, cost or (5 if prefix.startswith("$2") else 0))
        if value:
            return value
    if shutil.which("mkpasswd"):
        method = {"$2b$": "bcrypt", "$2y$": "bcrypt", "$y$": "yescrypt", "$6$": "sha-512"}[prefix]
        args = ["mkpasswd", "-m", method, "--stdin"] + (["-R", str(cost)] if cost else [])
        out = subprocess.run(args, input=password, capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.startswith("$"):
            return out.stdout.strip()
    if prefix == "$6$" and shutil.which("openssl"):
        out = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password,
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def auth_metric(test, result):
    return h.metric_value(test.metrics_text(), "s3gate_auth_total", result=result)


class AuthTestCase(h.ProxyTestCase):
    USERS = {"alice": "wonder land", "bob": "b0b!pass"}

    def write_users(self, users, kind="bcrypt-2b", path=None):
        path = path or os.path.join(self.workdir, "users")
        lines = ["# s3gate users"]
        for name, password in users.items():
            value = make_hash(kind, password)
            if value is None:
                self.skipTest(f"no tool here makes a {kind} hash")
            lines.append(f"{name}:{value}")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start_auth(self, overrides=None, users=None, auth=None):
        path = self.write_users(users or self.USERS)
        cfg = {"auth": {"users_file": path, **(auth or {})},
               "buckets": [{"name": "media"}, {"name": "ro-*", "access": "read-only"},
                           {"name": "bobs-*", "identities": ["bob"]}]}
        self.users_path = path
        return self.start_proxy(h.deep_merge(cfg, overrides or {}))

    def connect(self, target=MEDIA, port=None, headers=None):
        sock, resp = h.proxy_connect(self.proxy.port, f"{target}:{port or self.echo.port}", headers)
        self.addCleanup(sock.close)
        return sock, resp

    def assert_407(self, resp, details):
        body = self.assert_error(resp, 407, "http_request_denied", details)
        self.assertEqual(resp.headers.get("proxy-authenticate"), [REALM_HEADER], repr(resp))
        return body


class AuthTest(AuthTestCase):
    def test_allowed_user_is_the_identity_then_cached(self):
        self.start_auth()
        for attempt in range(2):
            sock, resp = self.connect(headers={"Proxy-Authorization": basic("alice", "wonder land")})
            self.assertEqual(resp.status, 200, repr(resp))
            client = h.client_name(sock)
            self.assertEqual(h.echo_roundtrip(sock, b"frame"), b"frame")
            sock.close()
            rec = self.proxy.log_for_client(client)
            self.assert_log(rec, kind="connect", decision="allow", status=200, identity="alice",
                            bucket="media")
        self.assertEqual(auth_metric(self, "success"), 1)
        self.assertEqual(auth_metric(self, "cached"), 1)
        self.assertEqual(auth_metric(self, "failure"), 0)
        self.assertEqual(auth_metric(self, "missing"), 0)
        self.assert_settled()

    def test_wrong_password_unknown_user_missing_and_malformed(self):
        self.start_auth()
        cases = [
            ({"Proxy-Authorization": basic("alice", "not-her-secret")}, "auth_failed", "alice"),
            ({"Proxy-Authorization": basic("mallory", "wonder land")}, "auth_failed", "mallory"),
            ({}, "auth_required", None),
            ({"Proxy-Authorization": "Basic !!!!"}, "auth_required", None),
            ({"Proxy-Authorization": "Negotiate YIIabc="}, "auth_required", None),
        ]
        for headers, reason, identity in cases:
            with self.subTest(reason=reason, headers=headers):
                sock, resp = self.connect(headers=headers)
                client = h.client_name(sock)
                sock.close()
                body = self.assert_407(resp, reason)
                self.assertNotIn("not-her-secret", body)
                rec = self.proxy.log_for_client(client)
                self.assert_log(rec, decision="deny", reason=reason, status=407)
                self.assertEqual(rec.get("identity"), identity, rec)
                # The line names what was asked for, though no name was decided.
                self.assertEqual((rec.get("host"), rec.get("port")), (MEDIA, self.echo.port), rec)
        # The same wrong password again: answered from the negative cache.
        _, resp = self.connect(headers={"Proxy-Authorization": basic("alice", "not-her-secret")})
        self.assert_407(resp, "auth_failed")
        self.assertEqual(auth_metric(self, "failure"), 3)
        self.assertEqual(auth_metric(self, "missing"), 3)
        self.assertEqual(auth_metric(self, "success"), 0)
        text = self.metrics_text()
        self.assertEqual(h.metric_value(text, "s3gate_denied_total", reason="auth_failed"), 3)
        self.assertEqual(h.metric_value(text, "s3gate_denied_total", reason="auth_required"), 3)
        self.assertEqual(h.metric_value(text, "s3gate_requests_total", kind="connect",
                                        decision="deny"), 6)
        # The password is never written anywhere.
        self.assertNotIn("not-her-secret", self.proxy.stdout_text() + self.proxy.stderr())
        self.assertNotIn("wonder land", self.proxy.stdout_text() + self.proxy.stderr())
        self.assert_settled()

    def test_plain_http_gets_407_and_ping_needs_no_credentials(self):
        self.start_auth()
        text = self.metrics_text()
        self.assertIn("# TYPE s3gate_auth_total counter", text)
        for result in ("success", "cached", "failure", "missing"):  # declared at zero
            self.assertIn(f's3gate_auth_total{{result="{result}"}} 0', text)
        resp, _ = h.send_raw(self.proxy.port,
                             f"GET http://{MEDIA}/shot/010.exr HTTP/1.1\r\nHost: {MEDIA}\r\n\r\n"
                             .encode())
        self.assert_407(resp, "auth_required")
        rec = self.proxy.wait_for_log(lambda r: r.get("kind") == "http")
        self.assert_log(rec, method="GET", decision="deny", reason="auth_required", status=407)
        self.assertEqual((rec.get("host"), rec.get("port")), (MEDIA, 80), rec)
        ping = h.http_get(self.proxy.port, "/ping")
        self.assertEqual((ping.status, ping.body), (200, b"OK"))
        self.assert_settled()

    def test_report_mode_still_requires_credentials(self):
        self.start_auth({"mode": "report"})
        _, resp = self.connect()
        self.assert_407(resp, "auth_required")
        _, resp = self.connect(headers={"Proxy-Authorization": basic("bob", "wrong")})
        self.assert_407(resp, "auth_failed")
        # A policy denial is still only reported for an authenticated user.
        sock, resp = self.connect(target=h.s3_name("secret"),
                                  headers={"Proxy-Authorization": basic("bob", "b0b!pass")})
        self.assertEqual(resp.status, 200, repr(resp))
        client = h.client_name(sock)
        sock.close()
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, decision="report", reason="bucket_not_allowed", identity="bob")
        self.assert_settled()

    def test_optional_auth_checks_credentials_only_when_sent(self):
        self.start_auth(auth={"required": False})
        sock, resp = self.connect()
        self.assertEqual(resp.status, 200, repr(resp))
        client = h.client_name(sock)
        sock.close()
        rec = self.proxy.log_for_client(client)
        self.assertNotIn("identity", rec)
        _, resp = self.connect(headers={"Proxy-Authorization": basic("alice", "nope")})
        self.assert_407(resp, "auth_failed")
        self.assertEqual(auth_metric(self, "missing"), 1)
        self.assert_settled()

    def test_identities_in_bucket_rules_match_the_user(self):
        self.start_auth()
        bobs = h.s3_name("bobs-renders")
        _, resp = self.connect(target=bobs, headers={"Proxy-Authorization":
                                                     basic("alice", "wonder land")})
        self.assert_error(resp, 403, "http_request_denied", "bucket_not_allowed")
        sock, resp = self.connect(target=bobs, headers={"Proxy-Authorization":
                                                        basic("bob", "b0b!pass")})
        self.assertEqual(resp.status, 200, repr(resp))
        client = h.client_name(sock)
        sock.close()
        self.assert_log(self.proxy.log_for_client(client), rule="bobs-*", identity="bob",
                        decision="allow")
        self.assert_settled()

    def test_each_hash_kind(self):
        kinds = ["bcrypt-2b", "bcrypt-2y", "yescrypt", "sha512"]
        path = os.path.join(self.workdir, "users")
        lines = []
        for kind in kinds:
            value = make_hash(kind, f"pw-{kind}")
            if value is None:
                self.skipTest(f"no tool here makes a {kind} hash")
            lines.append(f"user-{kind}:{value}")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.start_proxy({"auth": {"users_file": path}})
        for kind in kinds:
            with self.subTest(kind=kind):
                sock, resp = self.connect(headers={"Proxy-Authorization":
                                                   basic(f"user-{kind}", f"pw-{kind}")})
                self.assertEqual(resp.status, 200, repr(resp))
                sock.close()
                _, resp = self.connect(headers={"Proxy-Authorization":
                                                basic(f"user-{kind}", f"pw-{kind}x")})
                self.assert_407(resp, "auth_failed")
        self.assertEqual(auth_metric(self, "success"), len(kinds))
        self.assertEqual(auth_metric(self, "failure"), len(kinds))
        self.assert_settled()

    def test_users_file_change_applied_by_sighup(self):
        self.start_auth()
        creds = {"Proxy-Authorization": basic("alice", "wonder land")}
        sock, resp = self.connect(headers=creds)
        self.assertEqual(resp.status, 200)
        sock.close()
        # A new password for alice, bob removed: the cached old one no longer counts.
        self.write_users({"alice": "new password"}, kind="yescrypt", path=self.users_path)
        self.proxy.signal(signal.SIGHUP)
        h.wait_until(lambda: h.metric_value(self.metrics_text(), "s3gate_config_reloads_total",
                                            result="success") == 1, 5, message="the reload")
        _, resp = self.connect(headers=creds)
        self.assert_407(resp, "auth_failed")
        _, resp = self.connect(headers={"Proxy-Authorization": basic("bob", "b0b!pass")})
        self.assert_407(resp, "auth_failed")
        sock, resp = self.connect(headers={"Proxy-Authorization": basic("alice", "new password")})
        self.assertEqual(resp.status, 200, repr(resp))
        sock.close()
        # A broken users file is refused at reload; the running table stays.
        with open(self.users_path, "a") as f:
            f.write("carol:cleartext-oops\n")
        self.proxy.signal(signal.SIGHUP)
        h.wait_until(lambda: h.metric_value(self.metrics_text(), "s3gate_config_reloads_total",
                                            result="failure") == 1, 5, message="the failed reload")
        self.assertIn(f"{self.users_path}:3: user \"carol\"", self.proxy.stderr())
        self.assertNotIn("cleartext-oops", self.proxy.stderr())
        sock, resp = self.connect(headers={"Proxy-Authorization": basic("alice", "new password")})
        self.assertEqual(resp.status, 200, repr(resp))
        sock.close()
        self.assert_settled()

    def test_check_validates_the_users_file_and_warns_of_cleartext(self):
        path = os.path.join(self.workdir, "users")
        with open(path, "w") as f:
            f.write(f"alice:{make_hash('sha512', 'x')}\nbob:$1$abcdefgh$0123456789012345678901\n")
        cfg = self.config({"auth": {"users_file": path}})
        cfg_path = os.path.join(self.workdir, "check.yaml")
        with open(cfg_path, "w") as f:
            f.write(h.to_yaml(cfg))
        out = h.run_s3gate(["-c", cfg_path, "--check"])
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertIn(f"auth.users_file: {path}:2: user \"bob\": the hash is MD5 crypt", out.stderr)

        with open(path, "w") as f:
            f.write(f"alice:{make_hash('sha512', 'x')}\n")
        cfg["listeners"] = [{"address": f"0.0.0.0:{h.free_port()}"},
                            {"address": f"127.0.0.1:{h.free_port()}"}]
        with open(cfg_path, "w") as f:
            f.write(h.to_yaml(cfg))
        out = h.run_s3gate(["-c", cfg_path, "--check"])
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "configuration OK"), out.stderr)
        self.assertIn("listeners[0]: auth is set on 0.0.0.0", out.stderr)
        self.assertIn("in clear", out.stderr)
        self.assertNotIn("listeners[1]", out.stderr)

    def test_loop_answers_while_20_bcrypt_cost_12_checks_run(self):
        users = {}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            hashes = list(pool.map(lambda i: make_hash("bcrypt-2b", f"slow-{i}", 12), range(20)))
        if any(x is None for x in hashes):
            self.skipTest("no tool here makes a bcrypt hash")
        path = os.path.join(self.workdir, "users")
        with open(path, "w") as f:
            f.write(f"fast:{make_hash('sha512', 'quick')}\n")
            for i, value in enumerate(hashes):
                users[f"slow-{i}"] = f"slow-{i}"
                f.write(f"slow-{i}:{value}\n")
        self.start_proxy({"auth": {"users_file": path}})
        fast = {"Proxy-Authorization": basic("fast", "quick")}
        sock, resp = self.connect(headers=fast)  # cached from now on
        self.assertEqual(resp.status, 200)
        sock.close()

        results = []
        started = time.monotonic()

        def slow(i):
            s, r = self.connect(headers={"Proxy-Authorization": basic(f"slow-{i}", f"slow-{i}")})
            s.close()
            return r.status

        pings = []
        others = []
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(slow, i) for i in range(20)]
            deadline = time.monotonic() + 60
            for _ in range(10000):
                if all(f.done() for f in futures) or time.monotonic() > deadline:
                    break
                t0 = time.monotonic()
                ping = h.http_get(self.proxy.port, "/ping")
                pings.append(time.monotonic() - t0)
                self.assertEqual(ping.status, 200)
                t0 = time.monotonic()
                s, r = self.connect(headers=fast)
                others.append(time.monotonic() - t0)
                self.assertEqual(r.status, 200)
                s.close()
                time.sleep(0.02)
            results = [f.result(timeout=60) for f in futures]
        elapsed = time.monotonic() - started
        self.assertEqual(results, [200] * 20)
        self.assertEqual(auth_metric(self, "success"), 21)
        self.assertGreaterEqual(len(pings), 5, "the checks ended before /ping was measured")
        print(f"\n20 bcrypt-12 checks took {elapsed:.2f}s; /ping max {max(pings)*1000:.1f} ms "
              f"over {len(pings)}, a cached CONNECT max {max(others)*1000:.1f} ms")
        self.assertLess(max(pings), 0.2, pings)
        self.assertLess(max(others), 0.2, others)
        self.assert_settled()


class CurlAuthTest(AuthTestCase):
    @unittest.skipIf(shutil.which("curl") is None, "curl not on PATH")
    def test_curl_with_credentials_in_the_proxy_url(self):
        self.start_auth()
        url = f"https://{MEDIA}:{self.tls.port}/"

        def curl(proxy):
            return subprocess.run(["curl", "-sS", "--max-time", "20", "--proxy", proxy,
                                   "--cacert", self.pki.ca_file, url],
                                  capture_output=True, timeout=30, env=h.clean_env())

        password = urllib.parse.quote("b0b!pass", safe="")
        out = curl(f"http://bob:{password}@127.0.0.1:{self.proxy.port}")
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        self.assertEqual(out.stdout, h.TlsHttpServer.BODY)
        rec = self.proxy.wait_for_log(lambda r: r.get("port") == self.tls.port)
        self.assert_log(rec, decision="allow", identity="bob", status=200)
        for proxy, reason in ((f"http://bob:wrong@127.0.0.1:{self.proxy.port}", "auth_failed"),
                              (f"http://127.0.0.1:{self.proxy.port}", "auth_required")):
            out = curl(proxy)
            self.assertNotEqual(out.returncode, 0)
            self.assertIn(b"407", out.stderr)
            self.proxy.wait_for_log(lambda r: r.get("reason") == reason)
        self.assert_settled()


MISSING = h.moto_available()


@unittest.skipIf(MISSING is not None, MISSING or "")
class AwsClientAuthTest(h.MotoMixin, AuthTestCase):
    USERS = {"alice": "p@ss:word/1", "bob": "b0b!pass"}

    def proxy_url(self, user=None, password=None):
        if user is None:
            return f"http://127.0.0.1:{self.proxy.port}"
        return (f"http://{urllib.parse.quote(user, safe='')}:"
                f"{urllib.parse.quote(password, safe='')}@127.0.0.1:{self.proxy.port}")

    def client(self, proxy):
        import boto3
        from botocore.config import Config
        return boto3.client(
            "s3", region_name=h.REGION, endpoint_url=self.endpoint,
            aws_access_key_id="testing", aws_secret_access_key="testing",
            verify=self.pki.ca_file,
            config=Config(proxies={"https": proxy}, s3={"addressing_style": "virtual"},
                          retries={"max_attempts": 1}, connect_timeout=10, read_timeout=30))

    def aws(self, proxy, *args, timeout=60):
        return self.run_aws(args, proxy=proxy, timeout=timeout)

    def test_boto3_and_aws_cli(self):
        import botocore.exceptions
        self.start_auth({"buckets": [{"name": "media", "identities": ["alice"]}]})
        s3 = self.client(self.proxy_url("alice", "p@ss:word/1"))
        try:
            s3.create_bucket(Bucket="media",
                             CreateBucketConfiguration={"LocationConstraint": h.REGION})
        except botocore.exceptions.ClientError as exc:  # moto keeps buckets across tests
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou",
                                                     "BucketAlreadyExists"):
                raise
        s3.put_object(Bucket="media", Key="shot/010.exr", Body=b"frame 10")
        self.assertEqual(s3.get_object(Bucket="media", Key="shot/010.exr")["Body"].read(),
                         b"frame 10")
        rec = self.proxy.wait_for_log(lambda r: r.get("host") == MEDIA)
        self.assert_log(rec, decision="allow", identity="alice", rule="media")

        for proxy, reason, status in ((self.proxy_url("alice", "wrong"), "auth_failed", 407),
                                      (self.proxy_url("mallory", "x"), "auth_failed", 407),
                                      (self.proxy_url(), "auth_required", 407),
                                      (self.proxy_url("bob", "b0b!pass"), "bucket_not_allowed",
                                       403)):
            with self.subTest(reason=reason, proxy=proxy):
                with self.assertRaises(botocore.exceptions.BotoCoreError):
                    self.client(proxy).list_objects_v2(Bucket="media")
                self.proxy.wait_for_log(lambda r: r.get("reason") == reason
                                        and r.get("status") == status)

        if shutil.which("aws") is None:
            self.skipTest("aws CLI not on PATH (boto3 part passed)")
        r = self.aws(self.proxy_url("alice", "p@ss:word/1"), "s3", "ls", "s3://media/shot/")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("010.exr", r.stdout)
        before = auth_metric(self, "failure")
        r = self.aws(self.proxy_url("alice", "wrong"), "s3", "ls", "s3://media/shot/")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertGreater(auth_metric(self, "failure"), before)
        r = self.aws(self.proxy_url(), "s3", "ls", "s3://media/shot/")
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertNotIn("p@ss:word/1", self.proxy.stdout_text() + self.proxy.stderr())
        self.assert_settled()


if __name__ == "__main__":
    unittest.main()
