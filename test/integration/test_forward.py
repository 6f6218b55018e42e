"""Plain-HTTP forwarding through the real binary (SPEC section 3, plain HTTP):
absolute-form requests sent on to S3 names over verified TLS, with
hop-by-hop fields removed and everything else byte for byte, bodies streamed
both ways in every framing, Expect: 100-continue, keep-alive on both sides with
a per-host upstream pool, the RFC 9112 smuggling defences, per-request
decisions, upstream TLS failures, bounded memory for large bodies, and real S3
clients (curl, the aws CLI, boto3) through HTTP_PROXY against moto over TLS.

Every upstream listens on port 443 (80 for plain) of its own loopback address
127.0.0.X, mapped to the S3 names with `dns.pins`: binding those ports needs
root, so the whole file is skipped otherwise.

Run: S3GATE_BIN=../../build/s3gate python3 run.py test_forward
S3GATE_BIG_MIB sets the size of the large PUT and GET (default 1024, 256 under ASan).
"""

import contextlib
import hashlib
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

import harness as h

if h.NEEDS_ROOT:
    print(f"SKIP test_forward: {h.NEEDS_ROOT}", file=sys.stderr)

MEDIA = h.s3_name("media")
S3_ENDPOINT = h.S3_SUFFIX


def big_size():
    mib = os.environ.get("S3GATE_BIG_MIB")
    if mib:
        return int(mib) << 20
    return (256 if h.sanitized_binary() else 1024) << 20


# ---------------------------------------------------------------------------
# the exchange: heads, bodies, framing, 100-continue


class ForwardExchangeTest(h.ForwardTestCase):
    def test_request_head_rewritten_byte_for_byte(self):
        up = self.upstream()
        self.start_forward(up)
        c = self.client()
        # Odd spacing and case, repeated fields, a SigV4-like Authorization: all
        # end-to-end fields must arrive exactly as sent, in order.
        head = (f"GET http://{MEDIA}/shot/010.exr?versionId=3&x=a%20b HTTP/1.1\r\n"
                f"Host: {MEDIA}\r\n"
                "Connection: keep-alive, X-Hop-Named\r\n"
                "X-Amz-Date:20260101T000000Z\r\n"
                "x-hop-named: must go\r\n"
                "Authorization: AWS4-HMAC-SHA256 Credential=AKID/20260101/us-west-2/s3/aws4_request,"
                " SignedHeaders=host;x-amz-date, Signature=abc123  \r\n"
                "Keep-Alive: timeout=5\r\n"
                "Proxy-Connection: keep-alive\r\n"
                "Proxy-Authorization: Basic dTpw\r\n"
                "TE: trailers\r\n"
                "Upgrade: h2c\r\n"
                "X-Multi: 1\r\n"
                "x-multi:   2\t\r\n"
                "Range: bytes=0-9\r\n"
                "\r\n").encode()
        c.send(head)
        reply = c.read_response()
        self.assertEqual(reply.status, 200, repr(reply))
        self.assertEqual(reply.body, b"ok:/shot/010.exr?versionId=3&x=a%20b")
        got = up.requests[0]["head"]
        expected = (b"GET /shot/010.exr?versionId=3&x=a%20b HTTP/1.1\r\n"
                    + f"Host: {MEDIA}\r\n".encode()
                    + b"X-Amz-Date:20260101T000000Z\r\n"
                    b"Authorization: AWS4-HMAC-SHA256 Credential=AKID/20260101/us-west-2/s3/aws4_request,"
                    b" SignedHeaders=host;x-amz-date, Signature=abc123  \r\n"
                    b"X-Multi: 1\r\n"
                    b"x-multi:   2\t\r\n"
                    b"Range: bytes=0-9\r\n"
                    b"\r\n")
        self.assertEqual(got, expected)
        self.assertEqual(up.connections[0]["sni"], MEDIA)
        self.assertEqual(up.connections[0]["bytes_in"], len(expected))
        rec = self.log_lines(c, 1)[0]
        self.assert_log(rec, kind="http", method="GET", host=MEDIA, port=80, bucket="media",
                        rule="media", decision="allow", reason=None, status=200,
                        upstream=f"{up.ip}:443", bytes_up=len(expected))
        self.assertEqual(rec["bytes_down"], len(reply.head) + len(reply.body))

    def test_origin_form_of_bare_authority_and_http10(self):
        up = self.upstream()
        self.start_forward(up)
        c = self.client()
        c.send(f"GET http://{MEDIA} HTTP/1.1\r\nHost: {MEDIA}\r\n\r\n".encode())
        self.assertEqual(c.read_response().status, 200)
        c.send(f"GET http://{MEDIA}?list-type=2 HTTP/1.1\r\nHost: {MEDIA}\r\n\r\n".encode())
        self.assertEqual(c.read_response().status, 200)
        self.assertEqual([r["head"].split(b"\r\n")[0] for r in up.requests],
                         [b"GET / HTTP/1.1", b"GET /?list-type=2 HTTP/1.1"])
        # HTTP/1.0 without Host: sent on as HTTP/1.0 (no chunked answer can come
        # back) with the URL's authority as Host.
        c2 = self.client()
        c2.send(f"GET http://{MEDIA}/k HTTP/1.0\r\nX-A: b\r\n\r\n".encode())
        reply = c2.read_response()
        self.assertEqual(reply.status, 200)
        self.assertTrue(c2.closed(), "an HTTP/1.0 request without keep-alive closes")
        self.assertEqual(up.requests[-1]["head"],
                         f"GET /k HTTP/1.0\r\nX-A: b\r\nHost: {MEDIA}\r\n\r\n".encode())

    def test_request_bodies_content_length_and_chunked(self):
        up = self.upstream(responder=lambda req: [h.http_response(200, req["sha256"].encode())])
        self.start_forward(up)
        c = self.client()
        body = os.urandom(300000)
        c.send(h.http_request("PUT", f"http://{MEDIA}/a", body=body))
        reply = c.read_response()
        self.assertEqual(reply.body.decode(), hashlib.sha256(body).hexdigest())
        # chunked, with an extension and a trailer: passed on unchanged
        framed = (b"5;name=value\r\nhello\r\n" + b"%x\r\n" % 70000 + b"x" * 70000 + b"\r\n"
                  + b"0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n")
        c.send(f"PUT http://{MEDIA}/b HTTP/1.1\r\nHost: {MEDIA}\r\nTransfer-Encoding: chunked\r\n"
               "Trailer: x-amz-checksum-crc32\r\n\r\n".encode())
        for i in range(0, len(framed), 7001):  # in pieces, with pauses
            c.send(framed[i:i + 7001])
            time.sleep(0.002)
        reply = c.read_response()
        self.assertEqual(reply.body.decode(), hashlib.sha256(b"hello" + b"x" * 70000).hexdigest())
        self.assertEqual(up.requests[1]["raw_body"], framed)
        # a zero-length body, then a GET on the same connection
        c.send(h.http_request("PUT", f"http://{MEDIA}/c", length=0))
        self.assertEqual(c.read_response().body.decode(), hashlib.sha256(b"").hexdigest())
        self.assertEqual(len(up.connections), 1, "one upstream connection for the three")
        lines = self.log_lines(c, 3)
        self.assertEqual([r["status"] for r in lines], [200, 200, 200])
        self.assertGreater(lines[0]["bytes_up"], len(body))
        self.assertEqual(lines[1]["bytes_up"], len(up.requests[1]["head"]) + len(framed))

    def test_response_framings_on_one_connection(self):
        script = {
            "/length": [h.http_response(200, b"0123456789", headers=[
                ("Connection", "X-Secret"), ("X-Secret", "1"), ("Keep-Alive", "timeout=5"),
                ("Proxy-Authenticate", "Basic"), ("Upgrade", "h2c"), ("ETag", ' "a b" ')])],
            "/chunked": [h.http_response(200, length=False, headers=[("Transfer-Encoding", "chunked")])
                         + h.chunked(b"abc", b"defgh", trailer=b"X-T: 1\r\n")],
            "/head": [h.http_response(200, length=False, headers=[("Content-Length", "12345")])],
            "/204": [h.http_response(204, length=False)],
            "/304": [h.http_response(304, length=False, headers=[("ETag", '"e"')])],
            "/slow": [h.http_response(200, length=False, headers=[("Content-Length", "6")]) + b"ab", 0.2,
                      b"cd", 0.2, b"ef"],
            "/close": [h.http_response(200, length=False) + b"until the end", "close"],
        }
        up = self.upstream(responder=lambda req: script[req["target"]])
        self.start_forward(up)
        c = self.client()
        for path, method, status, body, framing in [
                ("/length", "GET", 200, b"0123456789", "length"),
                ("/chunked", "GET", 200, b"abcdefgh", "chunked"),
                ("/head", "HEAD", 200, b"", "none"),
                ("/204", "DELETE", 204, b"", "none"),
                ("/304", "GET", 304, b"", "none"),
                ("/slow", "GET", 200, b"abcdef", "length"),
                ("/close", "GET", 200, b"until the end", "close")]:
            with self.subTest(path=path):
                c.send(h.http_request(method, f"http://{MEDIA}{path}"))
                reply = c.read_response(method)
                self.assertEqual((reply.status, reply.body, reply.framing),
                                 (status, body, framing), repr(reply))
                if path == "/length":
                    # hop-by-hop fields dropped, the rest byte for byte
                    self.assertEqual(reply.head, b'HTTP/1.1 200 OK\r\nETag:  "a b" \r\n'
                                     b"Content-Length: 10\r\n\r\n")
        self.assertEqual(script["/chunked"][0].split(b"\r\n\r\n", 1)[1],
                         b"3\r\nabc\r\n5\r\ndefgh\r\n0\r\nX-T: 1\r\n\r\n")
        self.assertIn("12345", reply.headers.get("content-length", ["12345"]))
        # The close-delimited body ends the client connection too, said in advance.
        self.assertIn("close", [v.lower() for v in reply.headers.get("connection", [])])
        self.assertTrue(c.closed())
        self.assertEqual(len(up.connections), 1, "one upstream connection until the close")
        lines = self.log_lines(c, 7)
        self.assertEqual([r["status"] for r in lines], [200, 200, 200, 204, 304, 200, 200])

    def test_expect_100_continue_relayed_at_once(self):
        up = self.upstream(responder=lambda req: [h.http_response(200, req["sha256"].encode()
                                                           if req["method"] == "PUT" else b"after")])
        self.start_forward(up)
        c = self.client()
        body = b"z" * 100000
        c.send(h.http_request("PUT", f"http://{MEDIA}/e", headers=[("Expect", "100-continue")],
                       length=len(body)))
        started = time.monotonic()
        interim = c.read_response(stop_at_interim=True, timeout=3)
        self.assertEqual([s for s, _ in interim.interim], [100], repr(interim))
        self.assertLess(time.monotonic() - started, 1.0, "the 100 Continue came late")
        self.assertNotIn(b"content-length", interim.interim[0][1].lower())
        c.send(body)
        reply = c.read_response()
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.body.decode(), hashlib.sha256(body).hexdigest())
        self.assertIn(("Expect", "100-continue"), up.requests[0]["headers"],
                      "Expect is end-to-end: the upstream decides")
        # the connection goes on
        c.send(h.http_request("GET", f"http://{MEDIA}/after"))
        self.assertEqual(c.read_response().body, b"after")
        self.assertEqual(len(up.connections), 1)

    def test_expect_100_continue_refused_early(self):
        # The upstream answers 403 on the head alone, without a 100 and without
        # reading the body; the client, which has sent nothing of it, gets the 403
        # and a close.
        early = h.http_response(403, b"denied")
        up = self.upstream(on_head=lambda req: early, responder=lambda req: [])
        self.start_forward(up)
        c = self.client()
        c.send(h.http_request("PUT", f"http://{MEDIA}/e", headers=[("Expect", "100-continue")], length=10))
        reply = c.read_response(timeout=5)
        self.assertEqual((reply.status, reply.body, reply.interim), (403, b"denied", []))
        self.assertIn("close", [v.lower() for v in reply.headers.get("connection", [])],
                      "a response before the request body ends closes the client connection")
        self.assertTrue(c.closed())

    def test_interim_heads_and_bad_responses(self):
        script = {
            "/102": [b"HTTP/1.1 102 Processing\r\n\r\n", 0.05, h.http_response(200, b"fine")],
            "/cl-te": [b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"0\r\n\r\n"],
            "/two-cl": [b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"],
            "/fold": [b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n"],
            "/101": [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"],
            "/garbage": [b"SSH-2.0-OpenSSH\r\n\r\n"],
            "/silent-close": ["close"],
            "/bad-chunk": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc", 0.1,
                           b"de\r\nzz\r\n"],
            "/truncated": [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", "close"],
        }
        up = self.upstream(responder=lambda req: script[req["target"]])
        self.start_forward(up)
        c = self.client()
        c.send(h.http_request("GET", f"http://{MEDIA}/102"))
        reply = c.read_response()
        self.assertEqual((reply.status, reply.body, [s for s, _ in reply.interim]), (200, b"fine", [102]))
        for path in ("/cl-te", "/two-cl", "/fold", "/101", "/garbage", "/silent-close"):
            with self.subTest(path=path):
                c2 = self.client()
                c2.send(h.http_request("GET", f"http://{MEDIA}{path}"))
                reply = c2.read_response()
                if path == "/silent-close":
                    # Nothing came back: as if the connection had failed.
                    self.assert_error(reply, 502, "connection_refused", "connect_failed")
                else:
                    # A response head or framing that cannot be passed on safely.
                    self.assert_error(reply, 502, "http_protocol_error", "upstream_bad_response")
                self.assertTrue(c2.closed())
        for path in ("/bad-chunk", "/truncated"):
            with self.subTest(path=path):
                c2 = self.client()
                c2.send(h.http_request("GET", f"http://{MEDIA}{path}"))
                # The head went out; the body cannot end cleanly: the client sees a close
                # before the framing's end, never a complete response.
                with self.assertRaisesRegex(AssertionError, "EOF"):
                    c2.read_response(timeout=3)
        # The first connection (a clean 200 after a 102) carried the second request;
        # after that, every doubt closed its connection: one fresh connection each.
        self.assertEqual(len(up.connections), len(up.requests) - 1, "a connection reused after a doubt")

    def test_plain_upstream_on_port_80(self):
        up = self.upstream(plain=True)
        self.start_forward(up)
        c = self.client()
        c.send(h.http_request("GET", f"http://{MEDIA}/p"))
        self.assertEqual(c.read_response().body, b"ok:/p")
        rec = self.log_lines(c, 1)[0]
        self.assertEqual(rec["upstream"], f"{up.ip}:80")
        self.assertEqual(up.requests[0]["head"], f"GET /p HTTP/1.1\r\nHost: {MEDIA}\r\n\r\n".encode())

    def test_plain_upstream_bodies_spliced_byte_exact_with_keep_alive(self):
        # Between two plain sockets, bodies of known length go through a pipe
        # (splice); a request pipelined right after a body, a response read until
        # the close, and the byte counts must come out exactly as when copying.
        big = random.Random(8).randbytes(5 * 1024 * 1024 + 7)

        def responder(req):
            if req["method"] == "PUT":
                return [h.http_response(200, b"")]
            if req["target"] == "/big":
                return [h.http_response(200, big)]
            if req["target"] == "/until-close":
                return [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", big, "close"]
            return [h.http_response(200, b"ok:" + req["target"].encode())]

        up = self.upstream(plain=True, responder=responder)
        self.start_forward(up)
        c = self.client()
        put = h.http_request("PUT", f"http://{MEDIA}/up", body=big)
        get = h.http_request("GET", f"http://{MEDIA}/big")
        c.send(put + get)  # the GET pipelined right after the body
        first = c.read_response(method="PUT")
        self.assertEqual(first.status, 200)
        second = c.read_response()
        self.assertEqual(second.body, big)
        c.send(h.http_request("GET", f"http://{MEDIA}/small"))
        self.assertEqual(c.read_response().body, b"ok:/small")
        up.wait_requests(3)
        self.assertEqual(up.requests[0]["sha256"], hashlib.sha256(big).hexdigest())
        self.assertEqual(up.requests[0]["body_len"], len(big))
        self.assertEqual([r["target"] for r in up.requests], ["/up", "/big", "/small"])
        self.assertEqual(len(up.connections), 1, "the upstream connection was not kept")
        lines = self.log_lines(c, 3)
        self.assertEqual(lines[0]["bytes_up"], len(up.requests[0]["head"]) + len(big))
        self.assertEqual(lines[0]["bytes_down"], len(first.head))
        self.assertEqual(lines[1]["bytes_down"], len(second.head) + len(big))
        self.assertEqual(lines[1]["bytes_up"], len(up.requests[1]["head"]))
        self.assertFalse(c.closed(timeout=0.3))

        c.send(h.http_request("GET", f"http://{MEDIA}/until-close"))
        reply = c.read_response()
        self.assertEqual(reply.body, big)
        self.assertTrue(c.closed())
        rec = self.log_lines(c, 4)[3]
        self.assertEqual(rec["bytes_down"], len(reply.head) + len(big))


# ---------------------------------------------------------------------------
# keep-alive and the upstream pool


class KeepAliveTest(h.ForwardTestCase):
    def test_client_and_upstream_connections_reused(self):
        up = self.upstream()
        self.start_forward(up, {"workers": 1})
        c = self.client()
        for i in range(5):
            c.send(h.http_request("GET", f"http://{MEDIA}/k{i}"))
            self.assertEqual(c.read_response().body, f"ok:/k{i}".encode())
        # pipelined: both requests in one write
        c.send(h.http_request("GET", f"http://{MEDIA}/p1") + h.http_request("GET", f"http://{MEDIA}/p2"))
        self.assertEqual(c.read_response().body, b"ok:/p1")
        self.assertEqual(c.read_response().body, b"ok:/p2")
        # another client connection: the pooled upstream connection carries it
        c2 = self.client()
        c2.send(h.http_request("GET", f"http://{MEDIA}/other"))
        self.assertEqual(c2.read_response().body, b"ok:/other")
        # path-style to the same endpoint host is another pool key
        self.assertEqual(len(up.connections), 1, [r["index"] for r in up.connections])
        self.assertEqual(up.connections[0]["requests"], 8)
        lines = self.log_lines(c, 7)
        self.assertTrue(all(r["upstream"] == f"{up.ip}:443" for r in lines), lines)

    def test_no_reuse_after_any_doubt(self):
        script = {
            "/close": [h.http_response(200, b"x", headers=[("Connection", "close")])],
            "/extra": [h.http_response(200, b"x") + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
            "/http10": [h.http_response(200, b"x", version="1.0")],
            "/until-close": [h.http_response(200, length=False) + b"x", "close"],
            "/ok": [h.http_response(200, b"x")],
            "/head-with-body": [h.http_response(200, length=False, headers=[("Content-Length", "1")]) + b"x"],
        }
        up = self.upstream(responder=lambda req: script[req["target"]])
        self.start_forward(up, {"workers": 1})
        for path, method in [("/close", "GET"), ("/extra", "GET"), ("/http10", "GET"),
                             ("/head-with-body", "HEAD"), ("/until-close", "GET")]:
            with self.subTest(path=path):
                c = self.client()
                c.send(h.http_request(method, f"http://{MEDIA}{path}"))
                reply = c.read_response(method)
                self.assertEqual(reply.status, 200)
                before = len(up.connections)
                c3 = self.client()
                c3.send(h.http_request("GET", f"http://{MEDIA}/ok"))
                self.assertEqual(c3.read_response().status, 200)
                self.assertEqual(len(up.connections), before + 1,
                                 f"the connection of {path} was reused")
                c.close()
                c3.close()

    def test_pooled_connection_closed_by_upstream_is_not_used(self):
        # The upstream closes idle connections after its response (like S3 after
        # ~20 s): the pool notices and the next request gets a fresh connection.
        up = self.upstream(responder=lambda req: [h.http_response(200, b"x"), 0.1, "close"])
        self.start_forward(up, {"workers": 1})
        for i in range(3):
            c = self.client()
            c.send(h.http_request("GET", f"http://{MEDIA}/k{i}"))
            self.assertEqual(c.read_response().status, 200)
            time.sleep(0.4)
        self.assertEqual(len(up.connections), 3)

    def check_sent_again(self, how):
        # The race every pool has: the upstream closed a kept-alive connection
        # while it was idle and the close crossed our request. Emulated: the
        # upstream answers the first request of each connection and closes the
        # connection (`how`: silently, or with a reset) on the second.
        up = self.upstream(responder=lambda req: [how] if req["index"] >= 1
                           else [h.http_response(200, b"ok:" + req["target"].encode())])
        self.start_forward(up, {"workers": 1})
        c = self.client()
        c.send(h.http_request("GET", f"http://{MEDIA}/a"))
        self.assertEqual(c.read_response().body, b"ok:/a")
        c.send(h.http_request("GET", f"http://{MEDIA}/b"))
        reply = c.read_response()
        self.assertEqual((reply.status, reply.body), (200, b"ok:/b"), reply.head)
        # /b went twice: on the pooled connection, then on a new one.
        self.assertEqual([(r["conn"], r["target"]) for r in up.requests],
                         [(0, "/a"), (0, "/b"), (1, "/b")])
        lines = self.log_lines(c, 2)
        self.assertEqual(lines[1]["status"], 200)
        self.assertFalse(c.closed(timeout=0.2))
        # A request with a body is never sent twice: the client gets the 502.
        c.send(h.http_request("PUT", f"http://{MEDIA}/c", body=b"payload"))
        reply = c.read_response(method="PUT")
        self.assertEqual(reply.status, 502)
        self.assertEqual([r["target"] for r in up.requests].count("/c"), 1)

    def test_request_without_body_sent_again_when_a_reused_connection_closes(self):
        self.check_sent_again("close")

    def test_request_without_body_sent_again_when_a_reused_connection_resets(self):
        self.check_sent_again("rst")

    def test_fresh_connection_closed_silently_is_not_retried(self):
        up = self.upstream(responder=lambda req: ["close"])
        self.start_forward(up, {"workers": 1})
        c = self.client()
        c.send(h.http_request("GET", f"http://{MEDIA}/never"))
        reply = c.read_response()
        self.assertEqual(reply.status, 502)
        self.assertEqual(len(up.requests), 1)

    def test_session_resumed_on_new_connection(self):
        up = self.upstream(responder=lambda req: [h.http_response(200, b"x", headers=[("Connection", "close")])])
        self.start_forward(up, {"workers": 1})
        for i in range(3):
            c = self.client()
            c.send(h.http_request("GET", f"http://{MEDIA}/r{i}"))
            self.assertEqual(c.read_response().status, 200)
            c.close()
        h.wait_until(lambda: len(up.connections) == 3 and all(r["done"] for r in up.connections), 5)
        self.assertEqual([r["session_reused"] for r in up.connections], [False, True, True],
                         [r.get("version") for r in up.connections])
        self.assertEqual([r["sni"] for r in up.connections], [MEDIA] * 3)

    def test_session_resumed_with_tls12(self):
        ctx = self.pki.server_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        up = self.upstream(tls_ctx=ctx, responder=lambda req: [h.http_response(200, b"x", headers=[("Connection", "close")])])
        self.start_forward(up, {"workers": 1})
        for i in range(2):
            c = self.client()
            c.send(h.http_request("GET", f"http://{MEDIA}/r{i}"))
            self.assertEqual(c.read_response().status, 200)
            c.close()
        h.wait_until(lambda: len(up.connections) == 2 and all(r["done"] for r in up.connections), 5)
        self.assertEqual([r["version"] for r in up.connections], ["TLSv1.2"] * 2)
        self.assertEqual([r["session_reused"] for r in up.connections], [False, True])


# ---------------------------------------------------------------------------
# smuggling and framing defences


def attack(lines, body=b""):
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class FramingAttackTest(h.ForwardTestCase):
    U = f"http://{MEDIA}/k"
    HOST = f"Host: {MEDIA}"

    HEAD_ATTACKS = [
        # name, request bytes, details
        ("cl_and_te", attack([f"POST {U} HTTP/1.1", HOST, "Content-Length: 5",
                              "Transfer-Encoding: chunked"], b"0\r\n\r\n"), "bad_framing"),
        ("te_and_cl", attack([f"POST {U} HTTP/1.1", HOST, "Transfer-Encoding: chunked",
                              "Content-Length: 0"], b"0\r\n\r\n"), "bad_framing"),
        ("two_content_lengths", attack([f"PUT {U} HTTP/1.1", HOST, "Content-Length: 3",
                                        "Content-Length: 3"], b"abc"), "bad_framing"),
        ("content_length_list", attack([f"PUT {U} HTTP/1.1", HOST, "Content-Length: 3, 3"], b"abc"),
         "bad_framing"),
        ("content_length_sign", attack([f"PUT {U} HTTP/1.1", HOST, "Content-Length: +3"], b"abc"),
         "bad_framing"),
        ("content_length_hex", attack([f"PUT {U} HTTP/1.1", HOST, "Content-Length: 0x3"], b"abc"),
         "bad_framing"),
        ("content_length_negative", attack([f"PUT {U} HTTP/1.1", HOST, "Content-Length: -1"]),
         "bad_framing"),
        ("content_length_empty", attack([f"PUT {U} HTTP/1.1", HOST, "Content-Length:"]), "bad_framing"),
        ("content_length_overflow", attack([f"PUT {U} HTTP/1.1", HOST,
                                            "Content-Length: 99999999999999999999"]), "bad_framing"),
        ("content_length_inner_space", attack([f"PUT {U} HTTP/1.1", HOST, "Content-Length: 1 2"]),
         "bad_framing"),
        ("te_gzip_chunked", attack([f"POST {U} HTTP/1.1", HOST, "Transfer-Encoding: gzip, chunked"],
                                   b"0\r\n\r\n"), "bad_framing"),
        ("te_chunked_gzip", attack([f"POST {U} HTTP/1.1", HOST, "Transfer-Encoding: chunked, gzip"]),
         "bad_framing"),
        ("te_identity", attack([f"POST {U} HTTP/1.1", HOST, "Transfer-Encoding: identity"]),
         "bad_framing"),
        ("te_xchunked", attack([f"POST {U} HTTP/1.1", HOST, "Transfer-Encoding: xchunked"]),
         "bad_framing"),
        ("te_chunked_twice", attack([f"POST {U} HTTP/1.1", HOST, "Transfer-Encoding: chunked",
                                     "Transfer-Encoding: chunked"], b"0\r\n\r\n"), "bad_framing"),
        ("te_on_http10", attack([f"POST {U} HTTP/1.0", HOST, "Transfer-Encoding: chunked"],
                                b"0\r\n\r\n"), "bad_framing"),
        ("connection_names_content_length", attack([f"PUT {U} HTTP/1.1", HOST,
                                                    "Connection: content-length", "Content-Length: 3"],
                                                   b"abc"), "bad_framing"),
        ("obs_fold", attack([f"GET {U} HTTP/1.1", HOST, "X-A: b", " c"]), "bad_request"),
        ("obs_fold_tab", attack([f"GET {U} HTTP/1.1", HOST, "X-A: b", "\tc"]), "bad_request"),
        ("nul_in_value", attack([f"GET {U} HTTP/1.1", HOST, "X-A: b\x00c"]), "bad_request"),
        ("bare_cr_in_value", attack([f"GET {U} HTTP/1.1", HOST, "X-A: b\rc"]), "bad_request"),
        ("bare_lf_line_end", f"GET {U} HTTP/1.1\r\n{HOST}\nX-A: b\r\n\r\n".encode(), "bad_request"),
        ("space_before_colon", attack([f"GET {U} HTTP/1.1", HOST, "Content-Length : 0"]),
         "bad_request"),
        ("tab_before_colon", attack([f"GET {U} HTTP/1.1", HOST, "X-A\t: b"]), "bad_request"),
        ("host_differs", attack([f"GET {U} HTTP/1.1", "Host: evil.s3.us-west-2.amazonaws.com"]),
         "bad_request"),
        ("host_port_differs", attack([f"GET {U} HTTP/1.1", f"Host: {MEDIA}:8080"]), "bad_request"),
        ("two_hosts", attack([f"GET {U} HTTP/1.1", HOST, "Host: evil.example.com"]), "bad_request"),
        ("no_host_http11", attack([f"GET {U} HTTP/1.1"]), "bad_request"),
        ("connection_names_host", attack([f"GET {U} HTTP/1.1", HOST, "Connection: host"]),
         "bad_request"),
    ]

    BODY_ATTACKS = [
        ("chunk_size_overflow", b"10000000000000000\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n"),
        ("chunk_size_17_digits", b"00000000000000001\r\na\r\n0\r\n\r\n"),
        ("chunk_size_not_hex", b"zz\r\nab\r\n0\r\n\r\n"),
        ("chunk_size_negative", b"-1\r\na\r\n0\r\n\r\n"),
        ("chunk_missing_crlf", b"3\r\nabcXX0\r\n\r\n"),
        ("chunk_bare_lf", b"3\nabc\r\n0\r\n\r\n"),
        ("chunk_space_then_size", b"3 4\r\nabc\r\n0\r\n\r\n"),
        ("chunk_ext_control", b"3;a=\x01\r\nabc\r\n0\r\n\r\n"),
        ("trailer_content_length", b"0\r\nContent-Length: 5\r\n\r\n"),
        ("trailer_obs_fold", b"0\r\nX-A: b\r\n c\r\n\r\n"),
    ]

    SMUGGLED = f"GET http://{MEDIA}/smuggled HTTP/1.1\r\n{HOST}\r\n\r\n".encode()

    def test_head_attacks_rejected_and_nothing_forwarded(self):
        up = self.upstream()
        self.start_forward(up)
        for name, data, details in self.HEAD_ATTACKS:
            with self.subTest(attack=name):
                c = self.client()
                # A smuggled request right behind the bad one: dropped with it.
                try:
                    c.send(data + self.SMUGGLED)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                reply = c.read_response()
                self.assert_error(reply, 400, "http_request_error", details)
                self.assertTrue(c.closed(), "the connection stays open after a rejected request")
                c.close()  # ends s3gate's linger: the line is written at once
                rec = self.proxy.log_for_client(c.name)
                self.assert_log(rec, decision="deny", reason=details, status=400, bytes_up=0)
        time.sleep(0.2)
        self.assertEqual(up.connections, [], "the upstream was contacted")
        self.assertIn('s3gate_denied_total{reason="bad_framing"}', self.metrics_text())
        self.assert_settled()

    def test_bad_chunked_bodies_rejected_before_anything_is_sent(self):
        up = self.upstream()
        self.start_forward(up)
        for name, body in self.BODY_ATTACKS:
            with self.subTest(attack=name):
                c = self.client()
                data = (f"PUT http://{MEDIA}/k HTTP/1.1\r\n{self.HOST}\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n").encode() + body + self.SMUGGLED
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    c.send(data)
                reply = c.read_response()
                self.assert_error(reply, 400, "http_request_error", "bad_framing")
                self.assertTrue(c.closed())
                c.close()
                rec = self.proxy.log_for_client(c.name)
                self.assert_log(rec, reason="bad_framing", status=400, bytes_up=0)
        time.sleep(0.2)
        self.assertEqual(sum(r["bytes_in"] for r in up.connections), 0,
                         [bytes(r["raw"][:200]) for r in up.connections])
        self.assertEqual(up.requests, [])

    def test_bad_chunk_after_a_good_start_closes_both_sides(self):
        up = self.upstream(responder=lambda req: [h.http_response(200, b"late")])
        self.start_forward(up, {"workers": 1})
        c = self.client()
        c.send(f"PUT http://{MEDIA}/k HTTP/1.1\r\n{self.HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n".encode())
        up.wait_requests(1)
        c.send(b"10000000000000000\r\n" + self.SMUGGLED)
        reply = c.read_response()
        self.assert_error(reply, 400, "http_request_error", "bad_framing")
        self.assertTrue(c.closed())
        c.close()
        h.wait_until(lambda: up.connections[0]["done"], 5, message="the upstream connection closed")
        self.assertFalse(up.requests[0]["complete"], "the upstream saw a complete request")
        self.assertNotIn(b"smuggled", bytes(up.connections[0]["raw"]))
        self.assertEqual(len(up.requests), 1)

    def test_smuggling_behind_a_good_request_is_framed_as_its_own_request(self):
        # A body that hides a request: with one framing for both hops, the hidden
        # bytes are the body, and they arrive as the body, nothing more.
        up = self.upstream()
        self.start_forward(up, {"workers": 1})
        c = self.client()
        hidden = self.SMUGGLED
        c.send(h.http_request("POST", f"http://{MEDIA}/a", body=hidden))
        self.assertEqual(c.read_response().status, 200)
        self.assertEqual(len(up.requests), 1)
        self.assertEqual(up.requests[0]["body"], hidden)
        # a second request on the same connection, decided on its own
        c.send(h.http_request("GET", f"http://{MEDIA}/b"))
        self.assertEqual(c.read_response().body, b"ok:/b")


# ---------------------------------------------------------------------------
# per-request decisions


class DecisionTest(h.ForwardTestCase):
    def test_each_request_on_a_connection_is_decided(self):
        up = self.upstream()
        self.start_forward(up)
        c = self.client()
        c.send(h.http_request("GET", f"http://{MEDIA}/ok"))
        self.assertEqual(c.read_response().body, b"ok:/ok")
        c.send(h.http_request("GET", f"http://{h.s3_name('secret')}/x"))
        reply = c.read_response()
        self.assert_error(reply, 403, "http_request_denied", "bucket_not_allowed")
        self.assertTrue(c.closed())
        c.close()
        lines = self.log_lines(c, 2)
        self.assert_log(lines[0], decision="allow", bucket="media", status=200)
        self.assert_log(lines[1], decision="deny", reason="bucket_not_allowed", bucket="secret",
                        status=403, host=h.s3_name("secret"))
        self.assertEqual([r["target"] for r in up.requests], ["/ok"])

    def test_read_only_rule_limits_methods(self):
        up = self.upstream()
        self.start_forward(up)
        ro = h.s3_name("ro-data")
        c = self.client()
        c.send(h.http_request("GET", f"http://{ro}/a"))
        self.assertEqual(c.read_response().status, 200)
        c.send(h.http_request("HEAD", f"http://{ro}/a"))
        self.assertEqual(c.read_response("HEAD").status, 200)
        for method in ("PUT", "DELETE", "POST"):
            with self.subTest(method=method):
                c2 = self.client()
                c2.send(h.http_request(method, f"http://{ro}/a", body=b"data"))
                reply = c2.read_response()
                self.assert_error(reply, 403, "http_request_denied", "method_not_allowed")
                c2.close()
                rec = self.proxy.log_for_client(c2.name)
                self.assert_log(rec, decision="deny", reason="method_not_allowed", rule="ro-*",
                                bucket="ro-data", method=method)
        self.assertEqual([r["method"] for r in up.requests], ["GET", "HEAD"])

    def test_path_style_bucket_from_first_segment(self):
        up = self.upstream()
        self.start_forward(up)
        c = self.client()
        c.send(h.http_request("GET", f"http://{S3_ENDPOINT}/media/shot/1.exr"))
        self.assertEqual(c.read_response().body, b"ok:/media/shot/1.exr")
        self.assertEqual(up.requests[0]["head"],
                         f"GET /media/shot/1.exr HTTP/1.1\r\nHost: {S3_ENDPOINT}\r\n\r\n".encode())
        self.assertEqual(up.connections[0]["sni"], S3_ENDPOINT)
        rec = self.log_lines(c, 1)[0]
        self.assert_log(rec, bucket="media", rule="media", host=S3_ENDPOINT, decision="allow")
        c.send(h.http_request("PUT", f"http://{S3_ENDPOINT}/ro-x/k", body=b"1"))
        self.assert_error(c.read_response(), 403, "http_request_denied", "method_not_allowed")
        for path, status, error, details in [
                ("/secret/k", 403, "http_request_denied", "bucket_not_allowed"),
                ("/media%2F..%2Fsecret/k", 400, "http_request_error", "bad_request"),
                ("/media%2fx", 400, "http_request_error", "bad_request"),
                ("/med%69a/k", 200, None, None)]:
            with self.subTest(path=path):
                c2 = self.client()
                c2.send(h.http_request("GET", f"http://{S3_ENDPOINT}{path}"))
                reply = c2.read_response()
                if status == 200:
                    self.assertEqual(reply.status, 200)
                else:
                    self.assert_error(reply, status, error, details)
        self.assertEqual([r["target"] for r in up.requests], ["/media/shot/1.exr", "/med%69a/k"])

    def test_port_other_than_80_refused(self):
        up = self.upstream()
        self.start_forward(up)
        c = self.client()
        c.send(h.http_request("GET", f"http://{MEDIA}:443/k"))
        self.assert_error(c.read_response(), 403, "http_request_denied", "port_not_allowed")
        self.assertEqual(up.connections, [])


# ---------------------------------------------------------------------------
# upstream TLS failures


class UpstreamTlsTest(h.ForwardTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.extra = h.ExtraPki(tempfile.mkdtemp(prefix="extra-pki-", dir=cls.tmp))

    def tls_failure(self, ctx, expect_in_body=None):
        up = self.upstream(tls_ctx=ctx)
        self.start_forward(up, ca_file=self.extra.ca_file)
        c = self.client()
        c.send(h.http_request("PUT", f"http://{MEDIA}/k", body=b"secret payload"))
        reply = c.read_response()
        self.assert_error(reply, 502, "tls_certificate_error", "upstream_tls_failed")
        if expect_in_body:
            self.assertIn(expect_in_body, reply.body.decode().lower())
        self.assertTrue(c.closed())
        c.close()
        rec = self.proxy.log_for_client(c.name)
        self.assert_log(rec, decision="allow", reason="upstream_tls_failed", status=502)
        self.assertEqual(up.requests, [])
        self.assertEqual(sum(r["bytes_in"] for r in up.connections), 0)
        self.assertIn('s3gate_upstream_errors_total{reason="tls"} 1', self.metrics_text())
        return up

    def test_good_certificate_from_ca_file(self):
        up = self.upstream(tls_ctx=h.ExtraPki.context(self.extra.good))
        self.start_forward(up, ca_file=self.extra.ca_file)
        c = self.client()
        c.send(h.http_request("GET", f"http://{MEDIA}/k"))
        self.assertEqual(c.read_response().status, 200)
        self.assertIn(up.connections[0]["version"], ("TLSv1.2", "TLSv1.3"))

    def test_wrong_ca(self):
        self.tls_failure(self.pki.server_context(), "certificate verify failed")

    def test_wrong_name(self):
        self.tls_failure(h.ExtraPki.context(self.extra.wrong_name), "hostname mismatch")

    def test_expired(self):
        self.tls_failure(h.ExtraPki.context(self.extra.expired), "expired")

    def test_tls_below_1_2_refused(self):
        ctx = h.ExtraPki.context(self.extra.good)
        try:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ValueError, ssl.SSLError) as exc:
            self.skipTest(f"this Python/OpenSSL cannot serve TLS 1.1: {exc}")
        self.tls_failure(ctx)

    def test_upstream_not_speaking_tls(self):
        up = self.upstream(plain=True)
        # the plain server listens on :80; s3gate with upstream_tls goes to :443 of
        # the same address: put a plain HTTP server there instead.
        ip, listener = h.bind_fresh_ip(443)
        self.addCleanup(listener.close)
        up.stop()
        self.start_proxy(config=self.forward_config(ip))
        c = self.client()
        c.send(h.http_request("GET", f"http://{MEDIA}/k"))
        conn, _ = listener.accept()
        conn.settimeout(5)
        conn.recv(1024)  # the ClientHello
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        conn.close()
        reply = c.read_response()
        self.assert_error(reply, 502, "tls_certificate_error", "upstream_tls_failed")


# ---------------------------------------------------------------------------
# large bodies in bounded memory


class AbortTest(h.ForwardTestCase):
    """A client that vanishes mid-upload and an upstream that resets mid-response."""

    def test_client_aborts_mid_upload(self):
        up = self.upstream()
        self.start_forward(up, {"workers": 1})
        baseline = self.proxy.stable_fd_count()
        c = self.client()
        sent = 3 << 20
        c.send(h.http_request("PUT", f"http://{MEDIA}/aborted", length=64 << 20))
        for piece in h.pattern_chunks(sent):
            c.sock.sendall(piece)
        up.wait_requests(1)
        # every byte sent so far reaches the upstream before the client vanishes
        h.wait_until(lambda: up.requests[0]["body_len"] >= sent, 10,
                     message=f"{sent} body bytes at the upstream (have {up.requests[0]['body_len']})")
        name = c.name
        h.rst_close(c.sock)
        # s3gate closes its upstream connection: the upstream sees EOF short of 64 MiB
        h.wait_until(lambda: up.connections[0]["done"], 10, message="the upstream connection closed")
        self.assertFalse(up.requests[0]["complete"])
        self.assertLess(up.requests[0]["body_len"], 64 << 20)
        rec = self.proxy.wait_for_log(lambda r: r.get("client") == name,
                                      message=f"the aborted request's log line ({name})")
        self.assert_log(rec, kind="http", method="PUT", host=MEDIA, bucket="media", decision="allow",
                        upstream=f"{up.ip}:443")
        self.assertGreaterEqual(rec["bytes_up"], sent)
        self.assertLess(rec["bytes_up"], 64 << 20)
        self.assertNotEqual(rec["close"], "keep_alive", rec)
        self.assert_settled()
        self.assertLessEqual(self.proxy.fd_count(), baseline)
        # and it still serves
        c2 = self.client()
        c2.send(h.http_request("GET", f"http://{MEDIA}/after"))
        self.assertEqual(c2.read_response().status, 200)

    def truncated_exchange(self, actions, timeout=10.0):
        """Sends a GET, the upstream answers with `actions`; returns (head, body, how) as the
        client received them, reading until the connection ends."""
        up = self.upstream(responder=lambda req: actions)
        self.start_forward(up, {"workers": 1})
        c = self.client()
        c.send(h.http_request("GET", f"http://{MEDIA}/reset"))
        data, how = h.recv_until_eof(c.sock, timeout=timeout, limit=64 << 20)
        self.assertIn(how, ("eof", "reset"), f"the client connection did not end ({len(data)} bytes)")
        i = data.find(b"\r\n\r\n")
        self.assertGreaterEqual(i, 0, f"no response head: {data[:300]!r}")
        rec = self.proxy.wait_for_log(lambda r: r.get("client") == c.name,
                                      message="the reset request's log line")
        self.assert_log(rec, kind="http", method="GET", bucket="media", decision="allow")
        self.assertNotEqual(rec["close"], "keep_alive", rec)
        self.assert_settled()
        return data[:i + 4], data[i + 4:], how

    def test_upstream_reset_mid_length_body_truncates_client(self):
        n, part = 1 << 20, 300000
        body = h.pattern_block()[:part]
        head, got, how = self.truncated_exchange(
            [h.http_response(200, length=False, headers=[("Content-Length", str(n))]), body, 0.3, "rst"])
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        self.assertIn(b"content-length: %d" % n, head.lower())
        # the connection ends before N bytes: never a complete-looking response
        self.assertLess(len(got), n, "a reset upstream produced a complete-looking response")
        self.assertGreater(len(got), 0, "nothing of the body before the reset reached the client")
        self.assertEqual(got, body[:len(got)], "bytes before the reset passed on unchanged")

    def test_upstream_reset_mid_chunked_body_truncates_client(self):
        pieces = [b"a" * 1000, b"b" * 70000]
        partial = h.chunked(*pieces)[:-len(b"0\r\n\r\n")]
        head, got, how = self.truncated_exchange(
            [h.http_response(200, length=False, headers=[("Transfer-Encoding", "chunked")]), partial,
             0.3, "rst"])
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        self.assertIn(b"transfer-encoding: chunked", head.lower())
        self.assertFalse(got.endswith(b"0\r\n\r\n"), "a terminating 0-chunk reached the client")
        self.assertNotIn(b"\r\n0\r\n", b"\r\n" + got, "a zero-size chunk reached the client")
        self.assertTrue(partial.startswith(got), "bytes before the reset passed on unchanged")
        self.assertGreater(len(got), 0, "nothing of the body before the reset reached the client")

    def test_upstream_close_mid_length_body_truncates_client(self):
        # a clean close (FIN, TLS close_notify) short of Content-Length is a truncation too
        n = 1 << 20
        head, got, how = self.truncated_exchange(
            [h.http_response(200, length=False, headers=[("Content-Length", str(n))]), b"x" * 5000, 0.2,
             "close"])
        self.assertLess(len(got), n)


class LargeBodyTest(h.ForwardTestCase):
    def setUp(self):
        super().setUp()
        if h.sanitized_binary():
            # ASan's quarantine keeps freed memory (OpenSSL frees and allocates
            # its record buffers all the time) and would count as growth here.
            old = os.environ.get("ASAN_OPTIONS")
            os.environ["ASAN_OPTIONS"] = (old + ":" if old else "") + "quarantine_size_mb=1"
            self.addCleanup(lambda: os.environ.__setitem__("ASAN_OPTIONS", old) if old is not None
                            else os.environ.pop("ASAN_OPTIONS", None))

    def test_large_put_and_get_stream_in_bounded_memory(self):
        size = big_size()
        expected = h.pattern_sha256(size)

        def responder(req):
            if req["method"] == "PUT":
                return [h.http_response(200, req["sha256"].encode() + b" %d" % req["body_len"])]
            return [h.http_response(200, length=False, headers=[("Content-Length", str(size))]),
                    h.pattern_chunks(size)]
        up = self.upstream(responder=responder)
        # A generous idle_timeout: on a loaded machine the client may take more
        # than the usual 5 s to read the warm-up body and send the next request,
        # and s3gate rightly closes a kept-alive connection idle that long.
        self.start_forward(up, {"workers": 1, "limits": {"idle_timeout": "120s"}})
        c = self.client()
        c.send(h.http_request("GET", f"http://{MEDIA}/warm"))
        c.read_response(timeout=120)  # the whole body: slow on a loaded machine
        time.sleep(0.2)
        baseline = h.rss_kib(self.proxy.pid)
        watch = h.RssWatch(self.proxy.pid)
        try:
            started = time.monotonic()
            c.send(h.http_request("PUT", f"http://{MEDIA}/big", length=size))
            for piece in h.pattern_chunks(size):
                c.sock.sendall(piece)
            reply = c.read_response(timeout=120)
            self.assertEqual(reply.body.decode(), f"{expected} {size}")
            put_seconds = time.monotonic() - started
            started = time.monotonic()
            digest = hashlib.sha256()
            got = [0]

            def sink(data):
                digest.update(data)
                got[0] += len(data)
            c.send(h.http_request("GET", f"http://{MEDIA}/big"))
            reply = c.read_response(timeout=120, sink=sink)
            get_seconds = time.monotonic() - started
        finally:
            peak = watch.stop()
        self.assertEqual((reply.status, got[0], digest.hexdigest()), (200, size, expected))
        growth_mib = (peak - baseline) / 1024
        print(f"\n  {size >> 20} MiB PUT {put_seconds:.1f}s, GET {get_seconds:.1f}s; "
              f"RSS {baseline >> 10} MiB -> peak {peak >> 10} MiB", file=sys.stderr)
        self.assertLess(growth_mib, 64, f"RSS grew by {growth_mib:.0f} MiB for a {size >> 20} MiB body")
        lines = self.log_lines(c, 3)
        self.assertGreater(lines[1]["bytes_up"], size)
        self.assertGreater(lines[2]["bytes_down"], size)
        self.assertEqual(len(up.connections), 1)

    def test_slow_client_backpressure(self):
        # The client stalls, then reads a 64 MiB response in small slow pieces:
        # s3gate stops reading the upstream instead of buffering the body, and
        # its buffer does not grow while the client drains it a little at a time.
        size = 64 << 20

        def responder(req):
            return [h.http_response(200, length=False, headers=[("Content-Length", str(size))]),
                    h.pattern_chunks(size)]
        up = self.upstream(responder=responder)
        self.start_forward(up, {"workers": 1})
        c = self.client()
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        c.send(h.http_request("GET", f"http://{MEDIA}/warm"))
        c.read_response(timeout=120)  # the whole body: slow on a loaded machine
        baseline = h.rss_kib(self.proxy.pid)
        watch = h.RssWatch(self.proxy.pid)
        try:
            c.send(h.http_request("GET", f"http://{MEDIA}/big"))
            time.sleep(1.0)  # the client reads nothing: everything waits in kernel buffers
            stalled = h.rss_kib(self.proxy.pid)
            digest = hashlib.sha256()
            got = [0]

            def sink(data):
                digest.update(data)
                got[0] += len(data)
                if got[0] < (16 << 20):
                    time.sleep(0.0005)  # slow at first: s3gate sees partial writes
            reply = c.read_response(timeout=60, sink=sink)
        finally:
            peak = watch.stop()
        self.assertLess((stalled - baseline) / 1024, 16, "s3gate buffered a stalled client's response")
        self.assertEqual((reply.status, got[0], digest.hexdigest()), (200, size, h.pattern_sha256(size)))
        self.assertLess((peak - baseline) / 1024, 16,
                        f"RSS grew from {baseline >> 10} to {peak >> 10} MiB for a slow reader")


    def test_memory_flat_for_throttled_reader_of_big_body(self):
        # A 1 GiB (256 MiB under ASan) response read by a client throttled to
        # ~150 MB/s in small recv()s: s3gate's RSS stays flat while streaming.
        size = (256 if h.sanitized_binary() else 1024) << 20
        rate = 150e6
        piece = 32 << 10

        def responder(req):
            return [h.http_response(200, length=False, headers=[("Content-Length", str(size))]),
                    h.pattern_chunks(size)]
        up = self.upstream(responder=responder)
        self.start_forward(up, {"workers": 1, "limits": {"idle_timeout": "120s"}})
        c = self.client()
        c.send(h.http_request("GET", f"http://{MEDIA}/warm"))
        c.read_response(timeout=120)  # the whole body: slow on a loaded machine
        time.sleep(0.2)
        baseline = h.rss_kib(self.proxy.pid)
        watch = h.RssWatch(self.proxy.pid)
        digest = hashlib.sha256()
        got = 0
        try:
            c.send(h.http_request("GET", f"http://{MEDIA}/big"))
            started = time.monotonic()
            head = c._head(started + 10)
            self.assertIsNotNone(head)
            self.assertIn(b"content-length: %d" % size, head.lower())
            if c.buf:
                digest.update(bytes(c.buf))
                got += len(c.buf)
                c.buf.clear()
            c.sock.settimeout(10)
            for _ in range(size // 1024 + 10):
                if got >= size:
                    break
                data = c.sock.recv(min(piece, size - got))
                if not data:
                    break
                digest.update(data)
                got += len(data)
                ahead = got / rate - (time.monotonic() - started)
                if ahead > 0.002:
                    time.sleep(ahead)
                self.assertLess(time.monotonic() - started, 30, f"only {got} bytes in 30 s")
            seconds = time.monotonic() - started
        finally:
            peak = watch.stop()
        self.assertEqual((got, digest.hexdigest()), (size, h.pattern_sha256(size)))
        growth_mib = (peak - baseline) / 1024
        print(f"\n  {size >> 20} MiB to a throttled reader in {seconds:.1f}s "
              f"({size / seconds / 1e6:.0f} MB/s); RSS {baseline >> 10} MiB -> peak {peak >> 10} MiB",
              file=sys.stderr)
        self.assertLess(growth_mib, 32, f"RSS grew by {growth_mib:.0f} MiB for a throttled reader")
        self.assertGreater(self.log_lines(c, 2)[1]["bytes_down"], size)


# ---------------------------------------------------------------------------
# real S3 clients against moto over TLS


MOTO_MISSING = h.moto_available()


@unittest.skipIf(MOTO_MISSING is not None, MOTO_MISSING or "")
class RealClientTest(h.ForwardTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.moto = h.MotoTlsServer(cls.pki, cls.tmp, port=443, host=h.fresh_ip(443)).wait_ready()
            cls.relay = h.TcpRelay((cls.moto.host, 443))
        except Exception:
            cls.tearDownClass()
            raise
        cls.endpoint = f"http://{S3_ENDPOINT}"
        cls.aws_config = os.path.join(cls.tmp, "aws-config")
        with open(cls.aws_config, "w") as f:
            f.write(f"[default]\nregion = {h.REGION}\ns3 =\n  addressing_style = virtual\n")

    @classmethod
    def tearDownClass(cls):
        for name in ("relay", "moto"):
            obj = getattr(cls, name, None)
            if obj is not None:
                obj.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.start_proxy(config=self.forward_config(self.relay.ip, {"workers": 1}))

    def s3(self):
        import boto3
        from botocore.config import Config
        return boto3.client(
            "s3", region_name=h.REGION, endpoint_url=self.endpoint,
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=Config(proxies={"http": f"http://127.0.0.1:{self.proxy.port}"},
                          s3={"addressing_style": "virtual"}, retries={"max_attempts": 1},
                          connect_timeout=10, read_timeout=60))

    def bucket(self, s3, name):
        import botocore.exceptions
        try:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": h.REGION})
        except botocore.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def aws(self, *args, timeout=60):
        env = h.clean_env({
            "HTTP_PROXY": f"http://127.0.0.1:{self.proxy.port}",
            "AWS_CONFIG_FILE": self.aws_config,
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(self.tmp, "no-credentials"),
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": h.REGION, "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_MAX_ATTEMPTS": "1",
        })
        for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "NO_PROXY", "no_proxy"):
            env.pop(k, None)
        return subprocess.run(["aws"] + list(args) + ["--endpoint-url", self.endpoint], env=env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def test_boto3_put_get_list_multipart_delete(self):
        s3 = self.s3()
        before = len(self.relay.connections)
        self.bucket(s3, "media")
        s3.put_object(Bucket="media", Key="shot/010.exr", Body=b"frame 10")
        self.assertEqual(s3.get_object(Bucket="media", Key="shot/010.exr")["Body"].read(), b"frame 10")
        s3.head_object(Bucket="media", Key="shot/010.exr")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="media", Prefix="shot/")["Contents"]]
        self.assertIn("shot/010.exr", keys)
        part = h.pattern_block() * 5
        up = s3.create_multipart_upload(Bucket="media", Key="multi.bin")
        etags = []
        for n, data in ((1, part), (2, b"tail")):
            r = s3.upload_part(Bucket="media", Key="multi.bin", UploadId=up["UploadId"],
                               PartNumber=n, Body=data)
            etags.append({"PartNumber": n, "ETag": r["ETag"]})
        s3.complete_multipart_upload(Bucket="media", Key="multi.bin", UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": etags})
        got = s3.get_object(Bucket="media", Key="multi.bin")["Body"].read()
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(part + b"tail").digest())
        s3.delete_object(Bucket="media", Key="multi.bin")
        s3.delete_object(Bucket="media", Key="shot/010.exr")
        self.assertNotIn("Contents", s3.list_objects_v2(Bucket="media", Prefix="shot/"))
        used = len(self.relay.connections) - before

        def http_lines():
            return [r for r in self.proxy.access_lines() if r.get("kind") == "http"]
        h.wait_until(lambda: len(http_lines()) >= max(used, 12), 5, message="every request's log line")
        lines = http_lines()
        self.assertTrue(all(r["decision"] == "allow" and r["bucket"] == "media" for r in lines), lines)
        # boto3 kept one connection to s3gate for all of them; moto (werkzeug) ends
        # every response with "Connection: close", so s3gate honoured that and
        # never reused one of its connections (KeepAliveTest shows the pool).
        self.assertEqual(len({r["client"] for r in lines}), 1, lines)
        self.assertTrue(all(r["close"] == "keep_alive" for r in lines), lines)
        self.assertEqual(used, len(lines), "an upstream connection reused after Connection: close")
        # a bucket outside the allow-list, through the same client
        import botocore.exceptions
        with self.assertRaises(botocore.exceptions.ClientError) as ctx:
            s3.list_objects_v2(Bucket="secret")
        self.assertEqual(ctx.exception.response["ResponseMetadata"]["HTTPStatusCode"], 403)

    @unittest.skipIf(shutil.which("aws") is None, "aws CLI not on PATH")
    def test_aws_cli_cp_multipart_ls_rm(self):
        self.bucket(self.s3(), "media")
        path = os.path.join(self.workdir, "big.bin")
        size = 17 << 20  # above the CLI's 8 MiB multipart threshold: parallel parts
        with open(path, "wb") as f:
            for chunk in h.pattern_chunks(size):
                f.write(chunk)
        r = self.aws("s3", "cp", path, "s3://media/cli/big.bin")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = self.aws("s3", "ls", "s3://media/cli/")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("big.bin", r.stdout)
        back = os.path.join(self.workdir, "back.bin")
        r = self.aws("s3", "cp", "s3://media/cli/big.bin", back)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(back, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), h.pattern_sha256(size))
        r = self.aws("s3", "rm", "s3://media/cli/big.bin")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = [x for x in self.proxy.access_lines() if x.get("kind") == "http"]
        methods = {x["method"] for x in lines}
        self.assertTrue({"PUT", "POST", "GET", "DELETE"} <= methods, methods)
        self.assertGreater(sum(x["bytes_up"] for x in lines), size)
        r = self.aws("s3", "ls", "s3://secret/")
        self.assertNotEqual(r.returncode, 0)

    @unittest.skipIf(shutil.which("curl") is None, "curl not on PATH")
    def test_curl_put_with_expect_and_get(self):
        self.bucket(self.s3(), "media")
        self.proxy.wait_for_log(lambda r: r.get("kind") == "http")  # the bucket's creation
        skip = len(self.proxy.access_lines())
        path = os.path.join(self.workdir, "c.bin")
        size = 3 << 20  # curl sends Expect: 100-continue above 1 MiB
        with open(path, "wb") as f:
            for chunk in h.pattern_chunks(size):
                f.write(chunk)
        proxy = f"http://127.0.0.1:{self.proxy.port}"
        env = h.clean_env()
        sign = ["--aws-sigv4", f"aws:amz:{h.REGION}:s3", "--user", "testing:testing"]
        r = subprocess.run(["curl", "-sS", "-f", "-x", proxy] + sign + ["-T", path, "-o", "/dev/null",
                            "-w", "%{http_code}", f"http://{MEDIA}/curl/c.bin"],
                           capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual((r.returncode, r.stdout), (0, "200"), r.stderr)
        r = subprocess.run(["curl", "-sS", "-f", "-x", proxy] + sign + [f"http://{MEDIA}/curl/c.bin",
                            f"http://{MEDIA}/curl/c.bin", "-o", os.path.join(self.workdir, "1"),
                            "-o", os.path.join(self.workdir, "2")],
                           capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        for name in ("1", "2"):
            with open(os.path.join(self.workdir, name), "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), h.pattern_sha256(size))
        # chunked upload from stdin
        r = subprocess.run(["curl", "-sS", "-f", "-x", proxy] + sign + ["-T", "-", "-H",
                            "Transfer-Encoding: chunked", f"http://{MEDIA}/curl/chunked"],
                           input=b"streamed body", capture_output=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = subprocess.run(["curl", "-sS", "-x", proxy, "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://{h.s3_name('secret')}/x"], capture_output=True, text=True,
                           timeout=30, env=env)
        self.assertEqual(r.stdout, "403")
        # s3gate logs an exchange once its response is written, so curl may exit first
        h.wait_until(lambda: len([x for x in self.proxy.access_lines()[skip:]
                                  if x.get("kind") == "http"]) >= 5, 5, message="five log lines")
        lines = [x for x in self.proxy.access_lines()[skip:] if x.get("kind") == "http"]
        self.assertEqual([x["status"] for x in lines], [200, 200, 200, 200, 403], lines)
        self.assertEqual(lines[1]["client"], lines[2]["client"], "curl's two GETs on one connection")


    @unittest.skipIf(shutil.which("aws") is None, "aws CLI not on PATH")
    def test_aws_cli_64mib_multipart_upload_and_download(self):
        self.bucket(self.s3(), "media")
        size = (16 if h.sanitized_binary() else 64) << 20
        path = os.path.join(self.workdir, "big64.bin")
        with open(path, "wb") as f:
            for chunk in h.pattern_chunks(size):
                f.write(chunk)
        skip = len(self.proxy.access_lines())
        started = time.monotonic()
        r = self.aws("s3", "cp", path, "s3://media/cli/big64.bin", timeout=180)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        back = os.path.join(self.workdir, "back64.bin")
        r = self.aws("s3", "cp", "s3://media/cli/big64.bin", back, timeout=180)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        seconds = time.monotonic() - started
        digest = hashlib.sha256()
        with open(back, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        self.assertEqual(os.path.getsize(back), size)
        self.assertEqual(digest.hexdigest(), h.pattern_sha256(size))
        print(f"\n  aws s3 cp {size >> 20} MiB up and down in {seconds:.1f}s", file=sys.stderr)
        r = self.aws("s3", "rm", "s3://media/cli/big64.bin")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = [x for x in self.proxy.access_lines()[skip:] if x.get("kind") == "http"]
        # multipart both ways: CreateMultipartUpload and Complete (POST), the parts (PUT),
        # ranged GETs for the download, all allowed
        self.assertEqual(sum(1 for x in lines if x["method"] == "POST"), 2, lines)
        puts = [x for x in lines if x["method"] == "PUT"]
        gets = [x for x in lines if x["method"] == "GET"]
        self.assertGreaterEqual(len(puts), size // (8 << 20), lines)
        self.assertGreater(sum(x["bytes_up"] for x in puts), size)
        self.assertGreater(sum(x["bytes_down"] for x in gets), size)
        self.assertTrue(all(x["decision"] == "allow" and x["bucket"] == "media" for x in lines), lines)
        self.assertTrue(all(200 <= x["status"] < 300 for x in lines), lines)

    @unittest.skipIf(shutil.which("curl") is None, "curl not on PATH")
    def test_curl_get_head_put_chunked_delete(self):
        self.bucket(self.s3(), "media")
        self.proxy.wait_for_log(lambda r: r.get("kind") == "http")
        skip = len(self.proxy.access_lines())
        proxy = f"http://127.0.0.1:{self.proxy.port}"
        env = h.clean_env()
        sign = ["--aws-sigv4", f"aws:amz:{h.REGION}:s3", "--user", "testing:testing"]
        url = f"http://{MEDIA}/curl/verbs.bin"

        def curl(*args, input=None):
            r = subprocess.run(["curl", "-sS", "-x", proxy] + sign + ["-w", "%{http_code}"]
                               + list(args), input=input, capture_output=True, timeout=60, env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            return r.stdout.decode("latin-1")

        path = os.path.join(self.workdir, "v.bin")
        body = os.urandom(200000)
        with open(path, "wb") as f:
            f.write(body)
        out = os.path.join(self.workdir, "got")
        # PUT with a length, then GET and HEAD
        self.assertEqual(curl("-T", path, "-o", "/dev/null", url), "200")
        self.assertEqual(curl("-o", out, url), "200")
        with open(out, "rb") as f:
            self.assertEqual(f.read(), body)
        headers = curl("-I", url)
        self.assertTrue(headers.endswith("200"), headers)
        self.assertRegex(headers.lower(), rf"content-length: {len(body)}\r\n")
        # PUT chunked from stdin, replacing it; GET returns the new bytes
        streamed = os.urandom(150000)
        self.assertEqual(curl("-T", "-", "-H", "Transfer-Encoding: chunked", "-o", "/dev/null", url,
                              input=streamed), "200")
        self.assertEqual(curl("-o", out, url), "200")
        with open(out, "rb") as f:
            self.assertEqual(f.read(), streamed)
        # DELETE, then the object is gone
        self.assertIn(curl("-X", "DELETE", "-o", "/dev/null", url), ("200", "204"))
        self.assertEqual(curl("-o", "/dev/null", url), "404")
        self.assertEqual(curl("-I", "-o", "/dev/null", url), "404")
        h.wait_until(lambda: len([x for x in self.proxy.access_lines()[skip:]
                                  if x.get("kind") == "http"]) >= 8, 5, message="eight log lines")
        lines = [x for x in self.proxy.access_lines()[skip:] if x.get("kind") == "http"]
        self.assertIn(lines[5]["status"], (200, 204), lines)
        self.assertEqual([(x["method"], x["status"]) for x in lines],
                         [("PUT", 200), ("GET", 200), ("HEAD", 200), ("PUT", 200), ("GET", 200),
                          ("DELETE", lines[5]["status"]),
                          ("GET", 404), ("HEAD", 404)], lines)
        self.assertTrue(all(x["decision"] == "allow" and x["bucket"] == "media" for x in lines))
        self.assertGreater(lines[0]["bytes_up"], len(body))
        self.assertGreater(lines[3]["bytes_up"], len(streamed))
        self.assertGreater(lines[4]["bytes_down"], len(streamed))


if __name__ == "__main__":
    unittest.main()
