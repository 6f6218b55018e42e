#!/usr/bin/env python3
"""A soak of s3gate: the real binary under a bounded, mixed load for a given
time against local upstreams, then checks that nothing was corrupted, nothing
unexpected happened, and memory and descriptors came back.

    test/soak/soak.py --duration 60 --s3gate build/s3gate
    test/soak/soak.py --duration 14400 --s3gate build/s3gate --threads 8   # four hours

The mix, from several client threads until the deadline:
  tunnel_echo    CONNECT to an echo upstream; random bytes both ways, hashed at both ends
  tunnel_upload  CONNECT to a sink; the sink's sha256 and count must match what was sent
  tunnel_download CONNECT to a source; the pattern's sha256 must match what arrived
  http_get       plain-HTTP GETs (Content-Length and chunked answers) on a kept-alive connection
  http_put       plain-HTTP PUTs (Content-Length and chunked bodies); the origin's sha256 must match
  deny           requests policy refuses: 403 with the expected reason
  malformed      bad input: 400 with the expected reason
  abort          tunnels and requests the client drops mid-transfer (RST); what arrived before must be right
and a reload thread sending SIGHUP every few seconds, alternating two valid
configurations. Upstreams: harness EchoServer/SinkServer/SourceServer and a
plain HTTP/1.1 origin on 127.0.0.X:80 (binding port 80 needs root: otherwise
exit 77), DNS from a harness DnsServer.

Exit status: 0 clean; 1 on any corrupted transfer, unexpected answer, failed
reload, RSS or descriptor growth, sanitizer report or unclean exit; 77 when it
cannot run here. The figures are printed at the end.
"""

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness as h  # noqa: E402

SKIP = 77
REGION_SUFFIX = f"s3.{h.REGION}.amazonaws.com"
MEDIA = h.s3_name("media")
FORBIDDEN = h.s3_name("forbidden")
READ_ONLY = h.s3_name("ro-archive")


# ---------------------------------------------------------------------------
# process figures


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def is_asan(binary):
    """Whether the binary is built with AddressSanitizer (its work is then scaled down)."""
    if os.environ.get("S3GATE_ASAN"):
        return True
    tail = b""
    with open(binary, "rb") as f:
        for _ in range(1 << 12):  # 1 MiB pieces, bounded
            block = f.read(1 << 20)
            if not block:
                return False
            if b"__asan_init" in tail + block or b"libasan.so" in tail + block:
                return True
            tail = block[-32:]
    return False


# ---------------------------------------------------------------------------
# payloads


def object_bytes(size, seed):
    """The deterministic body of /obj/SIZE/SEED: the harness pattern rotated by seed."""
    block = h.pattern_block()
    off = seed % len(block)
    rotated = block[off:] + block[:off]
    reps = size // len(rotated) + 1
    return (rotated * reps)[:size]


# ---------------------------------------------------------------------------
# the plain HTTP origin


class HttpOrigin:
    """A plain HTTP/1.1 origin with keep-alive, one thread per connection.

    Idle connections are closed after `idle` seconds, 20 as S3 does: longer
    than s3gate keeps an idle upstream connection (15 s). An origin that
    closes sooner races s3gate reusing the connection, and a request with a
    body that loses that race cannot be sent again (its body is streamed, not
    kept): it gets a 502, as designed.

    GET /obj/SIZE/SEED          200, Content-Length, object_bytes(SIZE, SEED)
    GET /chunked/SIZE/SEED      the same body, chunked in random pieces
    PUT /put/...                reads the body (Content-Length or chunked),
                                answers "<sha256 hex> <count>"
    anything else               404
    """

    def __init__(self, host, port=80, idle=20.0):
        self.idle = idle
        self.requests = 0
        self.errors = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(256)
        except OSError:
            self._listener.close()
            raise
        self._listener.settimeout(0.1)
        self.host = host
        self.port = port
        self._open = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="http-origin", daemon=True)
        self._thread.start()

    def _accept_loop(self):
        for _ in iter(int, 1):  # until stopped; each pass waits at most 0.1 s
            if self._stop.is_set():
                return
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._open.add(conn)
            threading.Thread(target=self._run_one, args=(conn,), daemon=True).start()

    def _run_one(self, conn):
        try:
            self.handle(conn)
        except (OSError, ValueError, ConnectionError):
            self.errors += 1  # a client abort cuts requests short: not counted as a failure
        finally:
            with self._lock:
                self._open.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self._listener.close()
        with self._lock:
            conns = list(self._open)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    def handle(self, conn):
        buf = b""
        for _ in iter(int, 1):  # one request per pass, until close or idle
            conn.settimeout(self.idle)
            head, buf = self._read_head(conn, buf)
            if head is None:
                return
            conn.settimeout(60)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            digest = hashlib.sha256()
            count = 0
            if headers.get("transfer-encoding", "").lower() == "chunked":
                for _ in range(1 << 30):
                    line, buf = self._read_line(conn, buf)
                    size = int(line.split(b";")[0], 16)
                    if size == 0:
                        for _ in range(64):  # trailer section
                            line, buf = self._read_line(conn, buf)
                            if not line:
                                break
                        break
                    data, buf = self._read_exact(conn, buf, size)
                    digest.update(data)
                    count += size
                    crlf, buf = self._read_exact(conn, buf, 2)
                    if crlf != b"\r\n":
                        raise ValueError("bad chunk end")
            elif "content-length" in headers:
                left = int(headers["content-length"])
                while left:
                    data, buf = self._read_some(conn, buf, left)
                    digest.update(data)
                    count += len(data)
                    left -= len(data)
            self.requests += 1
            parts = target.split("/")
            if method == "PUT" and target.startswith("/put/"):
                self._send(conn, 200, f"{digest.hexdigest()} {count}".encode())
            elif method == "GET" and len(parts) == 4 and parts[1] in ("obj", "chunked"):
                body = object_bytes(int(parts[2]), int(parts[3]))
                if parts[1] == "obj":
                    self._send(conn, 200, body)
                else:
                    rnd = random.Random(int(parts[3]))
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    pos = 0
                    while pos < len(body):
                        n = min(len(body) - pos, rnd.randint(1, 256 << 10))
                        conn.sendall(b"%x\r\n" % n + body[pos:pos + n] + b"\r\n")
                        pos += n
                    conn.sendall(b"0\r\n\r\n")
            else:
                self._send(conn, 404, b"not found")
            if headers.get("connection", "").lower() == "close":
                return

    @staticmethod
    def _send(conn, status, body):
        reason = {200: "OK", 404: "Not Found"}[status]
        conn.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)

    @staticmethod
    def _read_head(conn, buf):
        for _ in range(4096):
            if b"\r\n\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n\r\n")
                return head, rest
            try:
                data = conn.recv(65536)
            except (socket.timeout, ConnectionResetError):
                return None, b""
            if not data:
                return None, b""
            buf += data
        raise ValueError("request head too long")

    @staticmethod
    def _read_some(conn, buf, most):
        if buf:
            return buf[:most], buf[most:]
        data = conn.recv(min(most, 262144))
        if not data:
            raise ConnectionError("EOF inside a body")
        return data, b""

    @classmethod
    def _read_exact(cls, conn, buf, n):
        out = b""
        while len(out) < n:
            data, buf = cls._read_some(conn, buf, n - len(out))
            out += data
        return out, buf

    @staticmethod
    def _read_line(conn, buf):
        for _ in range(1024):
            if b"\r\n" in buf:
                line, _, rest = buf.partition(b"\r\n")
                return line, rest
            data = conn.recv(65536)
            if not data:
                raise ConnectionError("EOF inside chunked framing")
            buf += data
        raise ValueError("line too long")


def bind_origin(attempts=60):
    """An HttpOrigin on port 80 of a free 127.0.0.X, or the reason there is none."""
    rnd = random.Random()
    last = None
    for _ in range(attempts):
        ip = f"127.0.{rnd.randint(1, 254)}.{rnd.randint(2, 254)}"
        try:
            return HttpOrigin(ip), None
        except PermissionError as exc:
            return None, f"cannot bind port 80 ({exc}): run as root"
        except OSError as exc:
            last = exc
    return None, f"no free 127.0.x.y:80 ({last})"


# ---------------------------------------------------------------------------
# a client side of HTTP and tunnels


class Unexpected(Exception):
    """An answer that is not what the operation's kind expects."""


class Corrupted(Exception):
    """Bytes that arrived differ from the bytes sent."""


class Head:
    """A response head. headers: lower-case name -> list of values."""

    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw

    @classmethod
    def parse(cls, raw):
        lines = raw.decode("latin-1").split("\r\n")
        m = re.match(r"^HTTP/1\.[01] (\d{3})", lines[0])
        if not m:
            raise Unexpected(f"not an HTTP response: {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise Unexpected(f"bad header line {line!r}")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return cls(int(m.group(1)), headers, raw)

    def header(self, name, default=None):
        values = self.headers.get(name.lower())
        return values[0] if values else default

    def proxy_status(self):
        value = self.header("Proxy-Status")
        return h.parse_proxy_status(value) if value is not None else None

    def __repr__(self):
        return f"<Head {self.raw[:300]!r}>"


class Conn:
    """A buffered client connection to the proxy."""

    def __init__(self, port, timeout):
        self.sock = h.open_client(port, timeout)
        self.buf = b""
        self.timeout = timeout

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def _more(self):
        data = self.sock.recv(262144)
        if not data:
            raise Unexpected(f"connection closed by the proxy (buffered {self.buf[:200]!r})")
        self.buf += data

    def head(self):
        for _ in range(1024):
            if b"\r\n\r\n" in self.buf:
                raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
                return Head.parse(raw)
            self._more()
        raise Unexpected("response head too long")

    def line(self):
        for _ in range(1024):
            if b"\r\n" in self.buf:
                line, _, self.buf = self.buf.partition(b"\r\n")
                return line
            self._more()
        raise Unexpected("line too long")

    def exact(self, n, sink):
        while n:
            if not self.buf:
                self._more()
            take = self.buf[:n]
            self.buf = self.buf[n:]
            sink(take)
            n -= len(take)

    def body(self, resp, sink):
        """Reads the body of `resp` (Content-Length, chunked or until close) into sink."""
        te = (resp.header("Transfer-Encoding") or "").lower()
        if te == "chunked":
            for _ in range(1 << 30):
                size = int(self.line().split(b";")[0], 16)
                if size == 0:
                    for _ in range(64):
                        if not self.line():
                            return
                    raise Unexpected("trailers too long")
                self.exact(size, sink)
                if self.line() != b"":
                    raise Unexpected("bad chunk end")
        elif resp.header("Content-Length") is not None:
            self.exact(int(resp.header("Content-Length")), sink)
        else:
            sink(self.buf)
            self.buf = b""
            for _ in range(1 << 30):
                data = self.sock.recv(262144)
                if not data:
                    return
                sink(data)


def error_of(resp):
    ps = resp.proxy_status() or {}
    return resp.status, ps.get("error"), ps.get("details")


def expect_error(resp, status, details):
    if resp is None:
        raise Unexpected(f"no answer where {status} {details} was expected")
    got = error_of(resp)
    if got[0] != status or got[2] != details:
        raise Unexpected(f"expected {status} {details}, got {got}: {resp!r}")
    conn = [v.lower() for v in resp.headers.get("connection", [])]
    if "close" not in conn:
        raise Unexpected(f"error without Connection: close: {resp!r}")


def pump_both(sock, payload, expect_len, deadline, on_data):
    """Sends `payload` while receiving, non-blocking, until everything is sent
    and `expect_len` bytes have arrived (on_data gets each piece)."""
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    try:
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        sent = 0
        got = 0
        view = memoryview(payload)
        for _ in range(1 << 30):
            if sent >= len(payload) and got >= expect_len:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unexpected(f"timed out: sent {sent}/{len(payload)}, got {got}/{expect_len}")
            for _key, events in sel.select(timeout=min(left, 1.0)):
                if events & selectors.EVENT_WRITE and sent < len(payload):
                    with contextlib.suppress(BlockingIOError):
                        sent += sock.send(view[sent:sent + (256 << 10)])
                    if sent >= len(payload):
                        sel.modify(sock, selectors.EVENT_READ)
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(262144)
                    except BlockingIOError:
                        continue
                    if not data:
                        raise Unexpected(f"EOF after {got} of {expect_len} bytes")
                    got += len(data)
                    on_data(data)
    finally:
        sel.close()
        sock.setblocking(True)


# ---------------------------------------------------------------------------
# the soak


class Soak:
    KINDS = ("tunnel_echo", "tunnel_upload", "tunnel_download", "http_get", "http_put", "deny",
             "malformed", "abort")
    WEIGHTS = (14, 8, 8, 20, 14, 12, 10, 8)

    def __init__(self, args):
        self.args = args
        self.asan = is_asan(args.s3gate)
        # Scale the work, never the checks: smaller transfers and fewer threads under ASan.
        self.scale = 0.25 if self.asan else 1.0
        self.threads = args.threads or (3 if self.asan else 6)
        self.max_size = max(64 << 10, int(args.max_mib * (1 << 20) * self.scale))
        self.op_timeout = 60.0
        self.lock = threading.Lock()
        self.counts = {k: 0 for k in self.KINDS}
        self.bytes = {"up": 0, "down": 0}
        self.failures = []  # (kind, message)
        self.corrupted = 0
        self.unexpected = 0
        self.reloads = 0
        self.stop_ops = threading.Event()

    # setup ----------------------------------------------------------------

    def setup(self):
        self.origin, reason = bind_origin()
        if self.origin is None:
            print(f"SKIP soak: {reason}", file=sys.stderr)
            sys.exit(SKIP)
        ip = self.origin.host
        self.dns = h.DnsServer(default=(ip,))
        self.echo = h.EchoServer(host=ip)
        self.sink = h.SinkServer(host=ip)
        self.source_size = max(256 << 10, int((8 << 20) * self.scale))
        self.source = h.SourceServer(self.source_size, host=ip)
        self.source_sha = h.pattern_sha256(self.source_size)
        self.tmp = tempfile.mkdtemp(prefix="s3gate-soak-")
        self.proxy_port = h.free_port()
        self.admin_port = h.free_port()
        self.configs = [self.make_config(0), self.make_config(1)]
        os.environ["S3GATE_BIN"] = os.path.abspath(self.args.s3gate)
        if self.asan:
            # A smaller quarantine, so that RSS measures s3gate rather than ASan's
            # 256 MiB of held freed memory; use-after-free is still caught.
            opts = os.environ.get("ASAN_OPTIONS", "")
            os.environ["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "quarantine_size_mb=16"
        self.proxy = h.S3gate(self.configs[0], self.tmp)

    def make_config(self, variant):
        """Two valid configurations that decide every request of the mix alike
        and differ in keys a reload applies (DNS TTLs, timeouts, a hosts entry, a bucket)."""
        cfg = h.base_config(self.proxy_port, self.admin_port, self.dns.port,
                            [self.echo.port, self.sink.port, self.source.port])
        cfg = h.deep_merge(cfg, {
            "http": {"upstream_tls": False},
            "limits": {"header_timeout": "10s", "idle_timeout": "30s", "connect_timeout": "5s",
                       "drain_timeout": "5s"},
            "dns": {"timeout": "2s", "attempts": 2, "min_ttl": "1s" if variant else "2s"},
            "access_log": os.path.join(self.tmp, "access.log") if self.args.access_log else "off",
        })
        if variant:
            cfg["buckets"] = cfg["buckets"] + [{"name": "soak-extra-*", "access": "read-only"}]
            cfg["hosts"] = [{"name": "sts.us-west-2.amazonaws.com", "ports": [443]}]
            cfg["limits"]["idle_timeout"] = "40s"
        return cfg

    def stop_upstreams(self):
        for obj in (self.echo, self.sink, self.source, self.origin, self.dns):
            with contextlib.suppress(Exception):
                obj.stop()

    def remove_workdir(self):
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print(f"work directory kept: {self.tmp}")

    # bookkeeping -----------------------------------------------------------

    def record(self, kind, up=0, down=0):
        with self.lock:
            self.counts[kind] += 1
            self.bytes["up"] += up
            self.bytes["down"] += down

    def fail(self, kind, exc):
        with self.lock:
            if isinstance(exc, Corrupted):
                self.corrupted += 1
            else:
                self.unexpected += 1
            if len(self.failures) < 50:
                self.failures.append((kind, f"{type(exc).__name__}: {exc}"))

    def prune_upstream_records(self):
        """The harness servers keep a record per connection: drop finished ones
        (a record appended meanwhile may be dropped too: only its bookkeeping)."""
        for server in (self.echo, self.sink, self.source):
            server.connections[:] = [r for r in list(server.connections) if not r.get("done")]

    # operations ------------------------------------------------------------

    def size(self, rnd):
        # Mostly small, sometimes up to max_size (log-uniform).
        return int(2 ** rnd.uniform(4, max(5, self.max_size.bit_length() - 1)))

    def tunnel(self, port, bucket_host=MEDIA):
        sock, resp = h.proxy_connect(self.proxy_port, f"{bucket_host}:{port}", timeout=self.op_timeout)
        if resp.status != 200:
            sock.close()
            raise Unexpected(f"CONNECT answered {error_of(resp)}: {resp!r}")
        return sock, resp.rest

    def op_tunnel_echo(self, rnd):
        sock, early = self.tunnel(self.echo.port)
        try:
            if early:
                raise Unexpected(f"bytes before any upstream byte: {early[:100]!r}")
            total = 0
            for _ in range(rnd.randint(1, 4)):  # a few exchanges on one tunnel
                payload = rnd.randbytes(self.size(rnd))
                got = hashlib.sha256()
                pump_both(sock, payload, len(payload), time.monotonic() + self.op_timeout, got.update)
                if got.digest() != hashlib.sha256(payload).digest():
                    raise Corrupted(f"echo of {len(payload)} bytes differs")
                total += len(payload)
            sock.shutdown(socket.SHUT_WR)
            rest, how = h.recv_until_eof(sock, self.op_timeout)
            if (rest, how) != (b"", "eof"):
                raise Unexpected(f"tunnel end: {how} after {rest[:100]!r}")
            self.record("tunnel_echo", total, total)
        finally:
            sock.close()

    def op_tunnel_upload(self, rnd):
        sock, _ = self.tunnel(self.sink.port)
        try:
            n = self.size(rnd)
            digest = hashlib.sha256()
            sock.settimeout(self.op_timeout)
            sent = 0
            while sent < n:
                piece = rnd.randbytes(min(n - sent, 1 << 20))
                sock.sendall(piece)
                digest.update(piece)
                sent += len(piece)
            sock.shutdown(socket.SHUT_WR)
            reply, how = h.recv_until_eof(sock, self.op_timeout)
            if how != "eof":
                raise Unexpected(f"sink reply ended by {how}: {reply!r}")
            if reply != f"{digest.hexdigest()} {n}\n".encode():
                raise Corrupted(f"sink saw {reply!r}, sent {n} bytes {digest.hexdigest()}")
            self.record("tunnel_upload", n, len(reply))
        finally:
            sock.close()

    def op_tunnel_download(self, rnd):
        sock, early = self.tunnel(self.source.port)
        try:
            data, how = h.recv_until_eof(sock, self.op_timeout, limit=self.source_size + 1)
            data = early + data
            if how != "eof":
                raise Unexpected(f"download ended by {how} after {len(data)} bytes")
            if len(data) != self.source_size or hashlib.sha256(data).hexdigest() != self.source_sha:
                raise Corrupted(f"download of {len(data)}/{self.source_size} bytes differs")
            self.record("tunnel_download", 0, len(data))
        finally:
            sock.close()

    def http_conn(self):
        return Conn(self.proxy_port, self.op_timeout)

    def op_http_get(self, rnd):
        conn = self.http_conn()
        try:
            total = 0
            for _ in range(rnd.randint(1, 5)):  # kept alive between requests
                n = self.size(rnd)
                seed = rnd.randrange(1 << 30)
                form = rnd.choice(("obj", "chunked"))
                conn.sock.sendall(f"GET http://{MEDIA}/{form}/{n}/{seed} HTTP/1.1\r\n"
                                  f"Host: {MEDIA}\r\nUser-Agent: soak\r\n\r\n".encode())
                resp = conn.head()
                if resp.status != 200:
                    raise Unexpected(f"GET answered {error_of(resp)}: {resp!r}")
                got = hashlib.sha256()
                count = [0]

                def sink(b, got=got, count=count):
                    got.update(b)
                    count[0] += len(b)

                conn.body(resp, sink)
                if count[0] != n or got.digest() != hashlib.sha256(object_bytes(n, seed)).digest():
                    raise Corrupted(f"GET /{form}/{n}/{seed}: {count[0]} bytes, content differs")
                total += n
            self.record("http_get", 0, total)
        finally:
            conn.close()

    def op_http_put(self, rnd):
        conn = self.http_conn()
        try:
            total = 0
            for i in range(rnd.randint(1, 4)):
                n = self.size(rnd)
                body = rnd.randbytes(n)
                if rnd.random() < 0.5:
                    head = (f"PUT http://{MEDIA}/put/{i} HTTP/1.1\r\nHost: {MEDIA}\r\n"
                            f"Content-Length: {n}\r\n\r\n").encode()
                    wire = [head, body]
                else:
                    head = (f"PUT http://{MEDIA}/put/{i} HTTP/1.1\r\nHost: {MEDIA}\r\n"
                            f"Transfer-Encoding: chunked\r\n\r\n").encode()
                    wire = [head]
                    pos = 0
                    while pos < n:
                        k = min(n - pos, rnd.randint(1, 512 << 10))
                        wire.append(b"%x\r\n" % k + body[pos:pos + k] + b"\r\n")
                        pos += k
                    wire.append(b"0\r\n\r\n")
                conn.sock.settimeout(self.op_timeout)
                for piece in wire:
                    conn.sock.sendall(piece)
                resp = conn.head()
                if resp.status != 200:
                    raise Unexpected(f"PUT answered {error_of(resp)}: {resp!r}")
                reply = bytearray()
                conn.body(resp, reply.extend)
                if bytes(reply) != f"{hashlib.sha256(body).hexdigest()} {n}".encode():
                    raise Corrupted(f"PUT of {n} bytes: origin saw {bytes(reply)!r}")
                total += n
            self.record("http_put", total, 0)
        finally:
            conn.close()

    DENIALS = (
        ("connect", FORBIDDEN, 403, "bucket_not_allowed"),
        ("connect", "example.com", 403, "host_not_allowed"),
        ("get", FORBIDDEN, 403, "bucket_not_allowed"),
        ("put", READ_ONLY, 403, "method_not_allowed"),
    )

    def op_deny(self, rnd):
        how, host, status, details = rnd.choice(self.DENIALS)
        if how == "connect":
            port = self.echo.port if host != "example.com" else 443
            sock, resp = h.proxy_connect(self.proxy_port, f"{host}:{port}", timeout=self.op_timeout)
            sock.close()
        elif how == "get":
            resp, _ = h.send_raw(self.proxy_port, f"GET http://{host}/x HTTP/1.1\r\nHost: {host}\r\n\r\n"
                                 .encode(), timeout=self.op_timeout)
        else:
            resp, _ = h.send_raw(self.proxy_port, f"PUT http://{host}/x HTTP/1.1\r\nHost: {host}\r\n"
                                 "Content-Length: 5\r\n\r\nhello".encode(), timeout=self.op_timeout)
        expect_error(resp, status, details)
        if resp.end not in ("eof", "reset"):
            raise Unexpected(f"denied connection not closed ({resp.end})")
        self.record("deny")

    MALFORMED = (
        (b"\x16\x03\x01\x00\xa5garbage that is not HTTP\r\n\r\n", "bad_request"),
        (b"CONNECT a..b." + REGION_SUFFIX.encode() + b":443 HTTP/1.1\r\nHost: x\r\n\r\n", "bad_host"),
        (b"CONNECT bad!name." + REGION_SUFFIX.encode() + b":443 HTTP/1.1\r\nHost: x\r\n\r\n", "bad_host"),
        (f"POST http://{MEDIA}/k HTTP/1.1\r\nHost: {MEDIA}\r\nContent-Length: 5\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode(), "bad_framing"),
        (f"PUT http://{MEDIA}/k HTTP/1.1\r\nHost: {MEDIA}\r\nContent-Length: 3\r\n"
         "Content-Length: 3\r\n\r\nabc".encode(), "bad_framing"),
    )

    def op_malformed(self, rnd):
        data, details = rnd.choice(self.MALFORMED)
        resp, _ = h.send_raw(self.proxy_port, data, timeout=self.op_timeout)
        expect_error(resp, 400, details)
        self.record("malformed")

    def op_abort(self, rnd):
        """A client that vanishes (RST) in the middle of a transfer; the bytes it
        got before must be the right ones."""
        how = rnd.choice(("echo", "download", "get", "put"))
        if how == "echo":
            sock, _ = self.tunnel(self.echo.port)
            payload = rnd.randbytes(1 << 20)
            sock.settimeout(self.op_timeout)
            sock.sendall(payload[:256 << 10])
            got = b""
            want = rnd.randint(1, 128 << 10)
            while len(got) < want:
                data = sock.recv(65536)
                if not data:
                    raise Unexpected("echo tunnel closed early")
                got += data
            if got != payload[:len(got)]:
                raise Corrupted("echo prefix differs before the abort")
            h.rst_close(sock)
            self.record("abort", 256 << 10, len(got))
        elif how == "download":
            sock, early = self.tunnel(self.source.port)
            sock.settimeout(self.op_timeout)
            got = early
            want = rnd.randint(1, self.source_size // 2)
            while len(got) < want:
                data = sock.recv(262144)
                if not data:
                    raise Unexpected("download closed early")
                got += data
            if got != h.pattern_block()[:len(got)] and got != b"".join(h.pattern_chunks(len(got))):
                raise Corrupted("download prefix differs before the abort")
            h.rst_close(sock)
            self.record("abort", 0, len(got))
        elif how == "get":
            conn = self.http_conn()
            n = max(1 << 20, self.size(rnd))
            seed = rnd.randrange(1 << 30)
            conn.sock.sendall(f"GET http://{MEDIA}/obj/{n}/{seed} HTTP/1.1\r\nHost: {MEDIA}\r\n\r\n"
                              .encode())
            resp = conn.head()
            if resp.status != 200:
                conn.close()
                raise Unexpected(f"GET answered {error_of(resp)}")
            want = rnd.randint(1, n // 2)
            got = bytearray(conn.buf)
            while len(got) < want:
                data = conn.sock.recv(262144)
                if not data:
                    raise Unexpected("GET body closed early")
                got += data
            if bytes(got) != object_bytes(len(got), seed):
                raise Corrupted("GET prefix differs before the abort")
            h.rst_close(conn.sock)
            self.record("abort", 0, len(got))
        else:
            conn = self.http_conn()
            n = 4 << 20
            conn.sock.settimeout(self.op_timeout)
            conn.sock.sendall(f"PUT http://{MEDIA}/put/abort HTTP/1.1\r\nHost: {MEDIA}\r\n"
                              f"Content-Length: {n}\r\n\r\n".encode())
            part = rnd.randint(1, n // 2)
            conn.sock.sendall(rnd.randbytes(part))
            h.rst_close(conn.sock)
            self.record("abort", part, 0)

    # threads ---------------------------------------------------------------

    def client_loop(self, index, deadline):
        rnd = random.Random(self.args.seed * 1000 + index)
        for _ in range(1 << 30):  # bounded by the deadline
            if time.monotonic() >= deadline or self.stop_ops.is_set():
                return
            kind = rnd.choices(self.KINDS, self.WEIGHTS)[0]
            try:
                getattr(self, "op_" + kind)(rnd)
            except (Corrupted, Unexpected) as exc:
                self.fail(kind, exc)
            except (OSError, AssertionError, ValueError) as exc:
                self.fail(kind, Unexpected(f"{exc!r}\n{traceback.format_exc(limit=3)}"))

    def reload_loop(self, deadline):
        variant = 0
        for _ in range(1 << 30):
            if self.stop_ops.wait(self.args.reload_every) or time.monotonic() >= deadline:
                return
            variant ^= 1
            path = self.proxy.config_path
            with open(path + ".new", "w") as f:
                f.write(h.to_yaml(self.configs[variant]))
            os.replace(path + ".new", path)
            self.proxy.signal(signal.SIGHUP)
            with self.lock:
                self.reloads += 1

    def run_phase(self, seconds, with_reloads):
        deadline = time.monotonic() + seconds
        threads = [threading.Thread(target=self.client_loop, args=(i, deadline), daemon=True)
                   for i in range(self.threads)]
        if with_reloads:
            threads.append(threading.Thread(target=self.reload_loop, args=(deadline,), daemon=True))
        for t in threads:
            t.start()
        next_prune = time.monotonic() + 5
        for t in threads:
            for _ in range(1 << 20):  # each operation is bounded by op_timeout
                t.join(timeout=1.0)
                if not t.is_alive():
                    break
                if time.monotonic() > next_prune:
                    self.prune_upstream_records()
                    next_prune = time.monotonic() + 5
                if time.monotonic() > deadline + 3 * self.op_timeout:
                    raise RuntimeError("a client thread did not finish")
                if not self.proxy.alive():
                    self.stop_ops.set()

    # checks ----------------------------------------------------------------

    def metric(self, name, labels=""):
        resp = h.http_get(self.admin_port, "/metrics", timeout=10)
        m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", resp.body.decode(), re.M)
        return float(m.group(1)) if m else 0.0

    def settle(self, fd_target):
        """Waits until the fd count is back to fd_target (the upstream pool closes
        idle connections after 15 s); returns (fds, rss_kib)."""
        deadline = time.monotonic() + self.args.settle
        fds = self.proxy.fd_count()
        for _ in range(10000):
            if fds <= fd_target or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
            fds = self.proxy.fd_count()
        time.sleep(1.0)
        return self.proxy.fd_count(), rss_kib(self.proxy.pid)

    def check_access_log(self):
        """(line count, None) when every line of the access log is a JSON object
        with a decision, else (count, the first bad line)."""
        n = 0
        with open(os.path.join(self.tmp, "access.log"), "rb") as f:
            for line in f:
                n += 1
                try:
                    rec = json.loads(line)
                except ValueError:
                    return n, f"line {n} is not JSON: {line[:200]!r}"
                if not isinstance(rec, dict) or rec.get("decision") not in ("allow", "deny", "report"):
                    return n, f"line {n} has no decision: {line[:200]!r}"
        return n, None if n else "empty"

    def run(self):
        self.setup()
        try:
            return self.run_and_check()
        finally:
            self.remove_workdir()

    def run_and_check(self):
        violations = []
        try:
            self.proxy.start()
            pid = self.proxy.pid
            fds_cold = self.proxy.stable_fd_count()
            rss_cold = rss_kib(pid)
            total = self.args.duration
            warmup = min(10.0, max(2.0, total * 0.15))
            t0 = time.monotonic()
            print(f"soak: {total:.0f}s, {self.threads} client threads, transfers up to "
                  f"{self.max_size >> 10} KiB{' (ASan build: work scaled down)' if self.asan else ''}, "
                  f"upstreams on {self.origin.host}, s3gate pid {pid}", flush=True)
            # Warm-up: the same mix, so that pools and allocator arenas reach their
            # working size; the RSS baseline is taken after it, at rest.
            self.run_phase(warmup, with_reloads=False)
            fds_base, rss_base = self.settle(fds_cold)
            self.run_phase(max(1.0, total - (time.monotonic() - t0)), with_reloads=True)
            elapsed = time.monotonic() - t0
            alive = self.proxy.alive()
            if alive:
                fds_end, rss_end = self.settle(fds_cold)
                want = self.reloads
                deadline = time.monotonic() + 10
                ok_reloads = self.metric("s3gate_config_reloads_total", '{result="success"}')
                while ok_reloads < want and time.monotonic() < deadline:
                    time.sleep(0.2)
                    ok_reloads = self.metric("s3gate_config_reloads_total", '{result="success"}')
                bad_reloads = self.metric("s3gate_config_reloads_total", '{result="failure"}')
            code, killed = self.proxy.stop()
        finally:
            self.stop_ops.set()
            self.stop_upstreams()

        ops = sum(self.counts.values())
        print(f"\nsoak figures ({elapsed:.0f}s, {ops} operations):")
        for k in self.KINDS:
            print(f"  {k:<16} {self.counts[k]}")
        print(f"  bytes up         {self.bytes['up']} ({self.bytes['up'] / (1 << 20):.1f} MiB)")
        print(f"  bytes down       {self.bytes['down']} ({self.bytes['down'] / (1 << 20):.1f} MiB)")
        print(f"  reloads          {self.reloads} sent" +
              (f", {ok_reloads:.0f} succeeded, {bad_reloads:.0f} failed" if alive else ""))
        print(f"  aborts           {self.counts['abort']}")
        print(f"  corrupted        {self.corrupted}")
        print(f"  unexpected       {self.unexpected}")
        if alive:
            print(f"  RSS KiB          {rss_cold} at start, {rss_base} after warm-up, {rss_end} at end")
            print(f"  fds              {fds_cold} at start, {fds_base} after warm-up, {fds_end} at end")
        print(f"  exit             {code}{' (killed)' if killed else ''}")
        for kind, msg in self.failures[:20]:
            print(f"  FAILURE {kind}: {msg}")

        if not alive:
            violations.append(f"s3gate died during the soak (status {code})")
        else:
            if fds_end > fds_cold + self.args.fd_tolerance:
                violations.append(f"descriptors {fds_end} at end > {fds_cold} at start "
                                  f"+ {self.args.fd_tolerance}")
            rss_limit = rss_base * (1 + self.args.rss_tolerance_pct / 100) + self.args.rss_tolerance_mib * 1024
            if rss_end > rss_limit:
                violations.append(f"RSS {rss_end} KiB at end > {rss_limit:.0f} KiB allowed "
                                  f"(baseline {rss_base} KiB)")
            if ok_reloads != self.reloads or bad_reloads:
                violations.append(f"reloads: {self.reloads} sent, {ok_reloads:.0f} succeeded, "
                                  f"{bad_reloads:.0f} failed")
        if self.args.access_log and alive:
            lines, bad = self.check_access_log()
            print(f"  access log       {lines} lines")
            if bad:
                violations.append(f"access log: {bad}")
        if self.corrupted:
            violations.append(f"{self.corrupted} corrupted transfer(s)")
        if self.unexpected:
            violations.append(f"{self.unexpected} unexpected answer(s)")
        for k in self.KINDS:
            if self.counts[k] == 0:
                violations.append(f"no successful {k} operation")
        if self.reloads == 0:
            violations.append("no reload happened (duration too short?)")
        if killed or code != 0:
            violations.append(f"s3gate exit status {code} after SIGTERM{' (killed)' if killed else ''}")
        report = self.proxy.sanitizer_report()
        if report:
            violations.append("sanitizer report:\n" + report)
        if violations:
            print("s3gate's stderr (last 3000 characters):\n" + self.proxy.stderr()[-3000:])
        for v in violations:
            print(f"VIOLATION: {v}")
        print("soak: " + ("FAILED" if violations else "OK"))
        return 1 if violations else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60, help="seconds of load (default 60)")
    p.add_argument("--s3gate", default=os.environ.get("S3GATE_BIN")
                   or os.path.join(HERE, "..", "..", "build", "s3gate"), help="the binary")
    p.add_argument("--threads", type=int, default=0, help="client threads (default 6, 3 under ASan)")
    p.add_argument("--max-mib", type=float, default=4, help="largest transfer in MiB (default 4; "
                   "a quarter under ASan)")
    p.add_argument("--reload-every", type=float, default=3.0, help="seconds between SIGHUPs")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--settle", type=float, default=40.0, help="seconds allowed to settle at the end")
    p.add_argument("--fd-tolerance", type=int, default=0)
    p.add_argument("--rss-tolerance-pct", type=float, default=20.0)
    p.add_argument("--rss-tolerance-mib", type=float, default=16.0)
    p.add_argument("--access-log", action="store_true", help="write the access log (off by default: "
                   "it grows by ~100 MB an hour)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (config, logs)")
    args = p.parse_args()
    if not (os.path.isfile(args.s3gate) and os.access(args.s3gate, os.X_OK)):
        print(f"SKIP soak: no s3gate binary at {args.s3gate}", file=sys.stderr)
        return SKIP
    args.s3gate = os.path.abspath(args.s3gate)
    return Soak(args).run()


if __name__ == "__main__":
    sys.exit(main())
