"""Integration-test harness for s3gate: the real binary against real peers on loopback.

Run one file by hand, from test/integration/:

    S3GATE_BIN=../../build/s3gate python3 run.py test_connect
    S3GATE_BIN=../../build/s3gate python3 run.py test_errors.ErrorTest.test_bucket_not_allowed

ctest runs every test_*.py the same way (test/CMakeLists.txt sets S3GATE_BIN);
run.py exits 77 (skipped) when every test of a file skipped.
Without S3GATE_BIN the harness looks for ../../build/s3gate; when there is no
executable binary every proxy test is skipped with the reason printed.
`python3 run.py test_harness` checks the harness itself (no binary needed).

Pieces (Python 3 standard library, plus `cryptography` for certificates and
moto/boto3 for test_aws_cli):

- free_port(): a free TCP port on 127.0.0.1.
- TestPki: a CA and one leaf certificate (S3 names, localhost, 127.0.0.1),
  generated once per process into a temporary directory.
- DnsServer: a UDP (and optionally TCP) DNS server in a thread (A/AAAA from a
  table, wildcard names, per-name SERVFAIL / NXDOMAIN / silence / truncated /
  malformed answers, answers that change from one query to the next, a query
  counter per name).
- EchoServer, SinkServer, SourceServer, TlsHttpServer: tunnel upstreams;
  ScriptedTcpServer plays a script of reads, writes, pauses, half-closes and
  resets (faults); refusing_port() and SilentPort for connect failures.
- ScriptedUpstream, ExtraPki, HttpClient, ForwardTestCase: plain-HTTP
  forwarding to upstreams on port 443/80 of their own 127.0.0.X (needs root).
- rss_kib(), RssWatch, sanitized_binary(): memory checks and their bounds.
- S3gate: the proxy process with a generated YAML configuration, its access
  log (stdout, one JSON object per line) and stderr captured to files.
- ProxyClient helpers: send CONNECT / raw bytes, parse the response head and
  the RFC 9209 Proxy-Status header.
- MotoTlsServer: moto's S3 over TLS with the test leaf certificate.
- ProxyTestCase: a unittest base class tying these together.

Every loop here is bounded in iterations and time, and every process is
stopped by its own PID.
"""

import atexit
import contextlib
import hashlib
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
LOOPBACK = "127.0.0.1"
REGION = "us-west-2"
S3_SUFFIX = f"s3.{REGION}.amazonaws.com"


def s3_name(bucket, region=REGION):
    """The virtual-hosted S3 name of a bucket: media.s3.us-west-2.amazonaws.com."""
    return f"{bucket}.s3.{region}.amazonaws.com"


# ---------------------------------------------------------------------------
# small utilities


def wait_until(predicate, timeout=5.0, interval=0.02, message="condition"):
    """Polls predicate() until it returns a truthy value (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message} (last value {last!r})")
        time.sleep(interval)


_handed_out_ports = set()


def free_port(host=LOOPBACK):
    """A TCP port that was free on `host` a moment ago (bind to port 0, read it, close).

    The kernel may hand the same port to two binds in a row once the first socket is
    closed, so a test asking for a listener port and an admin port could get one port
    twice; ports this process already handed out are never handed out again."""
    for _ in range(64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out_ports:
            _handed_out_ports.add(port)
            return port
    raise AssertionError("no fresh free port after 64 tries")


def clean_env(extra=None):
    """os.environ without any proxy variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(extra or {})
    return env


def rst_close(sock):
    """Closes a socket with an RST (SO_LINGER 0): a client that vanishes."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def recv_until_eof(sock, timeout=10.0, limit=1 << 20):
    """Reads until EOF, reset, `limit` bytes or the deadline; returns (data, how)
    where how is "eof", "reset", "limit" or "timeout"."""
    deadline = time.monotonic() + timeout
    chunks = []
    total = 0
    while total < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), "timeout"
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return b"".join(chunks), "timeout"
        except (ConnectionResetError, BrokenPipeError):
            return b"".join(chunks), "reset"
        if not data:
            return b"".join(chunks), "eof"
        chunks.append(data)
        total += len(data)
    return b"".join(chunks), "limit"


def recv_exact(sock, n):
    """Exactly n bytes, or b"" when the peer closed first (socket timeouts raise)."""
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            return b""
        buf += data
    return buf


# A deterministic byte pattern for bulk transfers: 1 MiB built by chaining sha256.
_PATTERN_BLOCK = None


def pattern_block():
    global _PATTERN_BLOCK
    if _PATTERN_BLOCK is None:
        out = bytearray()
        digest = b"s3gate"
        while len(out) < (1 << 20):
            digest = hashlib.sha256(digest).digest()
            out += digest
        _PATTERN_BLOCK = bytes(out)
    return _PATTERN_BLOCK


def pattern_chunks(total, chunk=1 << 20):
    """Yields the first `total` bytes of the repeating pattern, in chunks."""
    block = pattern_block()
    sent = 0
    while sent < total:
        n = min(chunk, total - sent, len(block))
        yield block[:n]
        sent += n


def pattern_sha256(total):
    h = hashlib.sha256()
    for c in pattern_chunks(total):
        h.update(c)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# certificates


class TestPki:
    """A throwaway CA and a leaf certificate for the S3 names of the tests.

    Files: ca.pem, leaf.pem (leaf then CA), leaf.key, in `directory`.
    """

    LEAF_NAMES = [
        f"*.s3.{REGION}.amazonaws.com",
        f"s3.{REGION}.amazonaws.com",
        "*.s3.amazonaws.com",
        "s3.amazonaws.com",
        "*.s3.eu-west-1.amazonaws.com",
        "localhost",
    ]

    _instance = None

    @classmethod
    def get(cls):
        """One PKI per process (generated on first use)."""
        if cls._instance is None:
            directory = tempfile.mkdtemp(prefix="s3gate-pki-")
            if not os.environ.get("S3GATE_KEEP_TMP"):
                atexit.register(shutil.rmtree, directory, True)
            cls._instance = cls(directory)
        return cls._instance

    def __init__(self, directory):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
        import datetime

        self.directory = directory
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s3gate test CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False),
                critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.DNSName(n) for n in self.LEAF_NAMES]
        sans.append(x509.IPAddress(ipaddress.ip_address(LOOPBACK)))
        leaf_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.LEAF_NAMES[0])]))
            .issuer_name(ca_name)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        self.ca_file = os.path.join(directory, "ca.pem")
        self.cert_file = os.path.join(directory, "leaf.pem")
        self.key_file = os.path.join(directory, "leaf.key")
        with open(self.ca_file, "wb") as f:
            f.write(ca_cert.public_bytes(pem))
        with open(self.cert_file, "wb") as f:
            f.write(leaf_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
        with open(self.key_file, "wb") as f:
            f.write(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    def server_context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def client_context(self):
        ctx = ssl.create_default_context(cafile=self.ca_file)
        return ctx


# ---------------------------------------------------------------------------
# DNS


class DnsServer:
    """A UDP DNS server on 127.0.0.1 that answers A and AAAA from a table.

    records: name -> list of address strings; a name "*.suffix" matches any
    name ending in ".suffix" (the longest suffix wins). `default` answers every
    other name (None: NXDOMAIN). set_failure(name, how) overrides a name:
    "servfail", "nxdomain", "drop" (no answer at all), "truncate" (an empty
    answer with the TC bit over UDP; over TCP the full answer), "malformed" (an
    answer record cut short). set_sequence(name, [addresses, ...]) answers the
    n-th A query for a name with the n-th list (the last one repeats): answers
    that change between lookups. With tcp=True the server also answers DNS over
    TCP on the same port (tcp_queries counts those). Queries are counted per
    (name, qtype); names are lower-cased, one trailing dot removed.
    """

    QTYPE_A = 1
    QTYPE_AAAA = 28

    FAILURES = ("servfail", "nxdomain", "drop", "truncate", "malformed")

    def __init__(self, default=(LOOPBACK,), ttl=60, host=LOOPBACK, tcp=False):
        self.default = list(default) if default is not None else None
        self.ttl = ttl
        self.records = {}
        self.ttls = {}
        self.failures = {}
        self.sequences = {}
        self.tcp_queries = 0
        self._counts = {}
        self._lock = threading.Lock()
        self.host = host
        self._tcp = None
        for _ in range(50):  # with TCP: a port free for both protocols
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.bind((host, 0))
            self.port = self._sock.getsockname()[1]
            if not tcp:
                break
            self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self._tcp.bind((host, self.port))
                break
            except OSError:
                self._tcp.close()
                self._sock.close()
                self._tcp = None
        if tcp and self._tcp is None:
            raise AssertionError("no port free for DNS over both UDP and TCP")
        self._sock.settimeout(0.1)
        if self._tcp is not None:
            self._tcp.listen(16)
            self._tcp.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dns", daemon=True)
        self._thread.start()
        if tcp:
            self._tcp_thread = threading.Thread(target=self._run_tcp, name="dns-tcp", daemon=True)
            self._tcp_thread.start()

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    # configuration
    def set(self, name, addresses, ttl=None):
        with self._lock:
            key = self._norm(name)
            self.records[key] = list(addresses)
            self.failures.pop(key, None)
            if ttl is not None:
                self.ttls[key] = ttl

    def set_failure(self, name, how):
        assert how in self.FAILURES, how
        with self._lock:
            self.failures[self._norm(name)] = how

    def set_sequence(self, name, answers, ttl=None):
        """The n-th A query for `name` gets answers[n] (the last one repeats)."""
        with self._lock:
            key = self._norm(name)
            self.sequences[key] = [list(a) for a in answers]
            self.failures.pop(key, None)
            if ttl is not None:
                self.ttls[key] = ttl

    def clear(self):
        with self._lock:
            self.records.clear()
            self.ttls.clear()
            self.failures.clear()
            self.sequences.clear()
            self._counts.clear()
            self.tcp_queries = 0

    # observation
    def reset_counts(self):
        with self._lock:
            self._counts.clear()

    def query_count(self, name=None, qtype=None):
        """Queries seen for `name` (any name when None) and `qtype` (any when None)."""
        with self._lock:
            key = self._norm(name) if name is not None else None
            return sum(n for (qn, qt), n in self._counts.items()
                       if (key is None or qn == key) and (qtype is None or qt == qtype))

    def counts(self):
        with self._lock:
            return dict(self._counts)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
        if self._tcp is not None:
            self._tcp_thread.join(timeout=2)
            self._tcp.close()

    # internals
    @staticmethod
    def _norm(name):
        name = name.lower()
        return name[:-1] if name.endswith(".") else name

    def _lookup(self, name, qtype):
        """Returns ("answer", addresses, ttl) | (a failure from FAILURES, None, None)."""
        with self._lock:
            if name in self.failures:
                return self.failures[name], None, None
            if name in self.sequences:
                answers = self.sequences[name]
                addresses = answers[0]
                if qtype == self.QTYPE_A and len(answers) > 1:
                    answers.pop(0)
                return "answer", addresses, self.ttls.get(name, self.ttl)
            candidates = [name] + ["*." + name.split(".", i)[-1] for i in range(1, name.count(".") + 1)]
            for c in candidates:
                if c in self.failures and c != name:
                    return self.failures[c], None, None
                if c in self.records:
                    return "answer", self.records[c], self.ttls.get(c, self.ttl)
            if self.default is None:
                return "nxdomain", None, None
            return "answer", self.default, self.ttl

    def _run(self):
        for _ in iter(int, 1):  # until stopped; each pass waits at most 0.1 s
            if self._stop.is_set():
                return
            try:
                packet, peer = self._sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                reply = self._handle(packet)
            except Exception as exc:  # a malformed query: ignore it, keep serving
                sys.stderr.write(f"DnsServer: bad query from {peer}: {exc!r}\n")
                continue
            if reply is not None:
                with contextlib.suppress(OSError):
                    self._sock.sendto(reply, peer)

    @staticmethod
    def parse_name(packet, offset):
        labels = []
        for _ in range(128):
            length = packet[offset]
            offset += 1
            if length == 0:
                return ".".join(labels), offset
            if length & 0xC0:
                raise ValueError("compressed name in a question")
            labels.append(packet[offset:offset + length].decode("ascii", "replace"))
            offset += length
        raise ValueError("name too long")

    def _run_tcp(self):
        """DNS over TCP (RFC 7766): length-prefixed messages, one connection at a time."""
        for _ in iter(int, 1):  # until stopped; each pass waits at most 0.1 s
            if self._stop.is_set():
                return
            try:
                conn, _ = self._tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                for _ in range(16):  # a few queries per connection
                    try:
                        size = recv_exact(conn, 2)
                        packet = recv_exact(conn, struct.unpack("!H", size)[0]) if size else b""
                    except OSError:
                        break
                    if not packet:
                        break
                    with self._lock:
                        self.tcp_queries += 1
                    try:
                        reply = self._handle(packet, tcp=True)
                    except Exception as exc:
                        sys.stderr.write(f"DnsServer: bad TCP query: {exc!r}\n")
                        break
                    if reply is None:
                        continue
                    with contextlib.suppress(OSError):
                        conn.sendall(struct.pack("!H", len(reply)) + reply)

    def _handle(self, packet, tcp=False):
        qid, flags, qdcount = struct.unpack("!HHH", packet[:6])
        if flags & 0x8000 or qdcount != 1:
            return None
        raw_name, end = self.parse_name(packet, 12)
        qtype, qclass = struct.unpack("!HH", packet[end:end + 4])
        question = packet[12:end + 4]
        name = self._norm(raw_name)
        with self._lock:
            self._counts[(name, qtype)] = self._counts.get((name, qtype), 0) + 1
        outcome, addresses, ttl = self._lookup(name, qtype)
        if outcome == "drop":
            return None
        if outcome == "truncate" and tcp:
            with self._lock:
                outcome, addresses, ttl = "answer", self.records.get(name, self.default or []), self.ttl
        # QR, the query's opcode and RD, RA
        rflags = 0x8000 | (flags & 0x7900) | 0x0080
        if outcome == "truncate":
            return struct.pack("!HHHHHH", qid, rflags | 0x0200, 1, 0, 0, 0) + question
        if outcome == "malformed":
            # one A record announced with 4 bytes of data, of which only 2 follow
            cut = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + b"\x7f\x00"
            return struct.pack("!HHHHHH", qid, rflags, 1, 1, 0, 0) + question + cut
        rcode = {"answer": 0, "servfail": 2, "nxdomain": 3}[outcome]
        answers = []
        if outcome == "answer" and qclass == 1:
            for a in addresses:
                ip = ipaddress.ip_address(a)
                if qtype == self.QTYPE_A and ip.version == 4:
                    answers.append(struct.pack("!HHHIH", 0xC00C, 1, 1, ttl, 4) + ip.packed)
                elif qtype == self.QTYPE_AAAA and ip.version == 6:
                    answers.append(struct.pack("!HHHIH", 0xC00C, 28, 1, ttl, 16) + ip.packed)
        header = struct.pack("!HHHHHH", qid, rflags | rcode, 1, len(answers), 0, 0)
        return header + question + b"".join(answers)


def dns_exchange(server_port, name, qtype=DnsServer.QTYPE_A, timeout=1.0, host=LOOPBACK, tcp=False):
    """Sends one query (over UDP, or TCP) and returns the raw reply, or None on timeout."""
    qid = os.getpid() & 0xFFFF
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack("!HH", qtype, 1)
    if tcp:
        with socket.create_connection((host, server_port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(q)) + q)
            try:
                size = recv_exact(s, 2)
                data = recv_exact(s, struct.unpack("!H", size)[0]) if size else b""
            except socket.timeout:
                return None
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(q, (host, server_port))
            try:
                data, _ = s.recvfrom(4096)
            except socket.timeout:
                return None
    rid, flags = struct.unpack("!HH", data[:4])
    assert rid == qid and flags & 0x8000
    return data


def dns_query(server_port, name, qtype=DnsServer.QTYPE_A, timeout=1.0, host=LOOPBACK, tcp=False):
    """A raw DNS query: returns (rcode, [addresses]) or None on timeout."""
    data = dns_exchange(server_port, name, qtype, timeout, host, tcp)
    if data is None:
        return None
    flags, qd, an = struct.unpack("!HHH", data[2:8])
    _, off = DnsServer.parse_name(data, 12)
    off += 4
    addrs = []
    for _ in range(an):
        assert data[off] & 0xC0 == 0xC0
        off += 2
        rtype, _, _, rdlen = struct.unpack("!HHIH", data[off:off + 10])
        off += 10
        addrs.append(str(ipaddress.ip_address(data[off:off + rdlen])))
        off += rdlen
    return flags & 0xF, addrs


# ---------------------------------------------------------------------------
# upstream servers


class _TcpServer:
    """A threaded TCP server on 127.0.0.1: one thread per connection.

    Subclasses implement handle(conn, record); `record` is a dict appended to
    self.connections (bytes_in, bytes_out, eof_seen, error...).
    """

    name = "tcp"

    def __init__(self, host=LOOPBACK, port=0, listener=None):
        if listener is None:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(128)
        self._listener = listener
        self._listener.settimeout(0.1)
        self.host = host
        self.port = self._listener.getsockname()[1]
        self.connections = []
        self._open = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name=self.name, daemon=True)
        self._thread.start()

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def _accept_loop(self):
        for _ in iter(int, 1):  # until stopped; each pass waits at most 0.1 s
            if self._stop.is_set():
                return
            try:
                conn, peer = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            record = {"peer": peer, "bytes_in": 0, "bytes_out": 0, "eof_seen": False,
                      "done": False, "error": None}
            self.new_record(record)
            with self._lock:
                record["index"] = len(self.connections)
                self.connections.append(record)
                self._open.add(conn)
            threading.Thread(target=self._run_one, args=(conn, record), daemon=True).start()

    def _run_one(self, conn, record):
        try:
            conn.settimeout(120)
            self.handle(conn, record)
        except Exception as exc:
            record["error"] = repr(exc)
        finally:
            with self._lock:
                self._open.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()
            record["done"] = True

    def new_record(self, record):
        """Adds a subclass's own fields to a new connection's record."""

    def handle(self, conn, record):
        raise NotImplementedError

    def wait_connections(self, n, timeout=5.0):
        return wait_until(lambda: len(self.connections) >= n, timeout,
                          message=f"{n} connection(s) to {self.name}")

    def wait_done(self, timeout=10.0):
        """Waits until every accepted connection has finished; returns the records."""
        wait_until(lambda: all(r["done"] for r in list(self.connections)), timeout,
                   message=f"{self.name} connections to finish")
        return list(self.connections)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self._listener.close()
        with self._lock:
            conns = list(self._open)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)


class EchoServer(_TcpServer):
    """Echoes every byte; on EOF finishes echoing, half-closes and closes."""

    name = "echo"

    def handle(self, conn, record):
        for _ in iter(int, 1):  # until EOF; bounded by the socket timeout
            data = conn.recv(262144)
            if not data:
                record["eof_seen"] = True
                conn.shutdown(socket.SHUT_WR)
                return
            record["bytes_in"] += len(data)
            conn.sendall(data)
            record["bytes_out"] += len(data)


class SinkServer(_TcpServer):
    """Swallows bytes until EOF, then answers "<sha256 hex> <count>\\n" and closes."""

    name = "sink"

    def handle(self, conn, record):
        h = hashlib.sha256()
        for _ in iter(int, 1):
            data = conn.recv(262144)
            if not data:
                break
            h.update(data)
            record["bytes_in"] += len(data)
        record["eof_seen"] = True
        record["sha256"] = h.hexdigest()
        reply = f"{record['sha256']} {record['bytes_in']}\n".encode()
        conn.sendall(reply)
        record["bytes_out"] = len(reply)
        conn.shutdown(socket.SHUT_WR)


class SourceServer(_TcpServer):
    """Sends `size` bytes of the pattern, then half-closes and waits (bounded)
    for the client's EOF before closing. `pattern_sha256(size)` is the digest."""

    name = "source"

    def __init__(self, size, **kw):
        self.size = size
        super().__init__(**kw)

    def handle(self, conn, record):
        for chunk in pattern_chunks(self.size):
            conn.sendall(chunk)
            record["bytes_out"] += len(chunk)
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(30)
        for _ in iter(int, 1):
            data = conn.recv(65536)
            if not data:
                record["eof_seen"] = True
                return
            record["bytes_in"] += len(data)


class TlsHttpServer(_TcpServer):
    """TLS with the test leaf certificate; answers one HTTP/1.1 request with 200
    and `body`, then closes. record["sni"] is the ClientHello's server name."""

    name = "tls-http"
    BODY = b"hello from the tls upstream\n"

    def __init__(self, pki, body=None, **kw):
        self.body = body if body is not None else self.BODY
        self._ctx = pki.server_context()
        self._sni = threading.local()
        self._ctx.sni_callback = self._on_sni
        super().__init__(**kw)

    def _on_sni(self, sslobj, server_name, ctx):
        self._sni.value = server_name
        return None

    def handle(self, conn, record):
        conn.settimeout(10)
        self._sni.value = None
        tls = self._ctx.wrap_socket(conn, server_side=True)
        record["sni"] = self._sni.value
        head = b""
        for _ in range(1024):
            if b"\r\n\r\n" in head:
                break
            data = tls.recv(4096)
            if not data:
                break
            head += data
        record["request"] = head.decode("latin-1")
        record["bytes_in"] = len(head)
        response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                    + str(len(self.body)).encode() + b"\r\nConnection: close\r\n\r\n" + self.body)
        tls.sendall(response)
        record["bytes_out"] = len(response)
        with contextlib.suppress(OSError, ssl.SSLError):
            tls.unwrap()
        tls.close()


class ScriptedTcpServer(_TcpServer):
    """A tunnel upstream that plays a script on every connection, for faults:

        ("recv", n)     read until n bytes have come (or EOF / reset)
        ("recv_eof",)   read until EOF or reset
        ("send", n)     send n bytes of the pattern (stops at a reset)
        ("sleep", s)    do nothing for s seconds (a slow reader or writer)
        ("shut_wr",)    half-close (FIN)
        ("hold", s)     read and drop until EOF, at most s seconds, never answering
        ("rst",)        close with an RST and stop

    After the script the connection is closed (FIN). Records: bytes_in,
    bytes_out, sha256_in (of the bytes read), eof_seen, reset_seen.
    """

    name = "scripted-tcp"

    def __init__(self, script, **kw):
        self.script = list(script)
        super().__init__(**kw)

    def new_record(self, record):
        record.update({"reset_seen": False, "sha256_in": None})

    def _read(self, conn, record, digest, want, deadline=None):
        """Reads until `want` more bytes came (None: until EOF); False at EOF or reset."""
        got = 0
        for _ in iter(int, 1):  # bounded by the socket timeout and the deadline
            if want is not None and got >= want:
                return True
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                conn.settimeout(min(left, 120))
            try:
                data = conn.recv(262144 if want is None else min(262144, want - got))
            except socket.timeout:
                if deadline is not None:
                    return True
                raise
            except ConnectionResetError:
                record["reset_seen"] = True
                return False
            if not data:
                record["eof_seen"] = True
                return False
            digest.update(data)
            got += len(data)
            record["bytes_in"] += len(data)

    def handle(self, conn, record):
        digest = hashlib.sha256()
        try:
            for step in self.script:
                op = step[0]
                if op == "recv":
                    self._read(conn, record, digest, step[1])
                elif op == "recv_eof":
                    self._read(conn, record, digest, None)
                elif op == "send":
                    for chunk in pattern_chunks(step[1]):
                        conn.sendall(chunk)
                        record["bytes_out"] += len(chunk)
                elif op == "sleep":
                    time.sleep(step[1])
                elif op == "shut_wr":
                    conn.shutdown(socket.SHUT_WR)
                elif op == "hold":
                    self._read(conn, record, digest, None, time.monotonic() + step[1])
                elif op == "rst":
                    rst_close(conn)
                    return
                else:
                    raise ValueError(f"unknown step {step!r}")
        except (ConnectionResetError, BrokenPipeError):
            record["reset_seen"] = True
        finally:
            record["sha256_in"] = digest.hexdigest()


def refusing_port(host=LOOPBACK):
    """A port on which nothing listens: connecting gets ECONNREFUSED."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class SilentPort:
    """A port whose SYNs are dropped: connecting times out.

    A listener with backlog 0 that never accepts; a few non-blocking connects
    fill its accept queue, after which Linux drops further SYNs.
    """

    def __init__(self, host=LOOPBACK):
        self.host = host
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((host, 0))
        self._listener.listen(0)
        self.port = self._listener.getsockname()[1]
        self._fillers = []
        for _ in range(3):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((host, self.port))
            self._fillers.append(s)
        time.sleep(0.05)

    def works(self, timeout=0.5):
        """True when a connect to the port really times out here."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            try:
                s.connect((self.host, self.port))
            except socket.timeout:
                return True
            except OSError:
                return False
            return False

    def stop(self):
        for s in self._fillers:
            s.close()
        self._listener.close()


# ---------------------------------------------------------------------------
# talking to the proxy


class Response:
    """A parsed response head. headers: lower-case name -> list of values."""

    def __init__(self, status, reason, headers, raw_head, rest):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.raw_head = raw_head
        self.rest = rest  # bytes received after the head
        self.body = b""
        self.end = None  # how the body ended: eof, reset, timeout, limit

    def header(self, name, default=None):
        values = self.headers.get(name.lower())
        return values[0] if values else default

    def proxy_status(self):
        """Parses `Proxy-Status: s3gate; error=...; details="..."` into a dict
        with "proxy" (the first member's name) and its parameters."""
        value = self.header("Proxy-Status")
        return parse_proxy_status(value) if value is not None else None

    def __repr__(self):
        return f"<Response {self.status} {self.reason!r} {self.headers!r} body={self.body[:200]!r}>"


def parse_proxy_status(value):
    """RFC 9209 / RFC 8941 list member: token *( ";" key [ "=" ( token / sf-string ) ] )."""
    out = {}
    m = re.match(r'\s*([A-Za-z*][A-Za-z0-9_\-.:%*/]*)', value)
    if not m:
        return None
    out["proxy"] = m.group(1)
    pos = m.end()
    param = re.compile(r'\s*;\s*([a-z*][a-z0-9_\-.*]*)(?:=("(?:[^"\\]|\\.)*"|[^;,\s]+))?')
    for _ in range(32):
        m = param.match(value, pos)
        if not m:
            break
        v = m.group(2)
        if v is None:
            v = True
        elif v.startswith('"'):
            v = re.sub(r'\\(.)', r'\1', v[1:-1])
        out[m.group(1)] = v
        pos = m.end()
    return out


def read_head(sock, timeout=10.0, limit=1 << 16):
    """Reads an HTTP response head; returns a Response or None when the peer
    closed (or reset) before a whole head arrived."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\r\n\r\n" not in buf and len(buf) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no response head within {timeout}s (got {buf!r})")
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            data = b""
        if not data:
            if b"\r\n\r\n" not in buf:
                return None if not buf else _parse_head(buf + b"\r\n\r\n")
            break
        buf += data
    return _parse_head(buf)


def _parse_head(buf):
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"^HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
    if not m:
        raise AssertionError(f"not an HTTP response: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise AssertionError(f"bad header line {line!r}")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return Response(int(m.group(1)), m.group(2) or "", headers, head, rest)


def open_client(proxy_port, timeout=10.0, host=LOOPBACK):
    s = socket.create_connection((host, proxy_port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def client_name(sock):
    """The "client" field the access log should show for this socket."""
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def connect_request(target, headers=None):
    hdrs = {"Host": target}
    hdrs.update(headers or {})
    return (f"CONNECT {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
            + "\r\n").encode()


def proxy_connect(proxy_port, target, headers=None, timeout=10.0):
    """Opens a connection to the proxy and sends CONNECT. Returns (sock, Response).
    For a non-2xx answer the body is read to EOF (resp.body, resp.end)."""
    sock = open_client(proxy_port, timeout)
    sock.sendall(connect_request(target, headers))
    resp = read_head(sock, timeout)
    if resp is None:
        raise AssertionError(f"proxy closed without answering CONNECT {target}")
    if not 200 <= resp.status < 300:
        rest, resp.end = recv_until_eof(sock, timeout)
        resp.body = resp.rest + rest
    return sock, resp


def send_raw(proxy_port, data, timeout=10.0, shut_write=False):
    """Sends raw bytes, reads the answer head and body to EOF. Returns (Response, client-name)."""
    sock = open_client(proxy_port, timeout)
    name = client_name(sock)
    try:
        try:
            sock.sendall(data)
            if shut_write:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = read_head(sock, timeout)
        if resp is not None:
            rest, resp.end = recv_until_eof(sock, timeout)
            resp.body = resp.rest + rest
        return resp, name
    finally:
        sock.close()


def http_get(port, path="/", host=LOOPBACK, timeout=10.0, headers=None):
    """GET with Connection: close, read to EOF. Returns Response."""
    hdrs = {"Host": f"{host}:{port}", "Connection": "close"}
    hdrs.update(headers or {})
    data = (f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
            + "\r\n").encode()
    resp, _ = send_raw(port, data, timeout)
    return resp


_METRIC_SAMPLE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_METRIC_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def metric_value(text, name, **labels):
    """The value of one series (labels matched exactly) in a /metrics page; 0 when absent."""
    for line in text.splitlines():
        m = _METRIC_SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        if dict(_METRIC_LABEL.findall(m.group(2) or "")) == {k: str(v) for k, v in labels.items()}:
            return float(m.group(3))
    return 0.0


def echo_roundtrip(sock, payload, timeout=5.0):
    """Sends payload through a tunnel to an echo server and reads it back."""
    sock.sendall(payload)
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < len(payload):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break
        if not data:
            break
        got += data
    return got


# ---------------------------------------------------------------------------
# YAML (written by hand: no PyYAML needed)


def _yaml_scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(value, indent=0):
    """Block-style YAML for dicts, lists and scalars."""
    pad = " " * indent
    lines = []
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:\n" + to_yaml(v, indent + 2))
            elif isinstance(v, (dict, list)):
                lines.append(f"{pad}{k}: {'{}' if isinstance(v, dict) else '[]'}\n")
            else:
                lines.append(f"{pad}{k}: {_yaml_scalar(v)}\n")
        return "".join(lines)
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        for item in value:
            if isinstance(item, dict) and item:
                body = to_yaml(item, indent + 2)
                lines.append(pad + "- " + body[indent + 2:])
            elif isinstance(item, list) and item:
                lines.append(pad + "-\n" + to_yaml(item, indent + 2))
            elif isinstance(item, (dict, list)):
                lines.append(f"{pad}- {'{}' if isinstance(item, dict) else '[]'}\n")
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}\n")
        return "".join(lines)
    return pad + _yaml_scalar(value) + "\n"


def deep_merge(base, override):
    """A copy of `base` with `override` merged in (dicts recursively; a value of
    None in `override` deletes the key)."""
    out = dict(base)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------------------
# the proxy process


def s3gate_binary():
    """The binary under test: $S3GATE_BIN, else ../../build/s3gate; None if not executable."""
    path = os.environ.get("S3GATE_BIN") or os.path.join(HERE, "..", "..", "build", "s3gate")
    path = os.path.abspath(path)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def run_s3gate(args, timeout=10, env=None):
    """Runs the binary to completion (for --check, explain, ...). Returns CompletedProcess.
    A command that does not finish within `timeout` raises AssertionError (the
    child is killed by subprocess.run)."""
    binary = s3gate_binary()
    try:
        return subprocess.run([binary] + list(args), capture_output=True, text=True, timeout=timeout,
                              env=clean_env(env), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"`s3gate {' '.join(args)}` did not finish within {timeout}s "
                             f"(output: {exc.stdout!r} {exc.stderr!r})") from None


def base_config(proxy_port, admin_port, dns_port, ports):
    """The configuration most tests start from (SPEC section 2 keys)."""
    return {
        "version": 1,
        "listeners": [{"address": f"{LOOPBACK}:{proxy_port}"}],
        "admin": {"address": f"{LOOPBACK}:{admin_port}"},
        "workers": 2,
        "clients": ["127.0.0.0/8"],
        "dns": {
            "servers": [f"{LOOPBACK}:{dns_port}"],
            "allowed_networks": ["127.0.0.0/8"],
            "timeout": "500ms",
            "attempts": 1,
        },
        "ports": list(ports),
        "buckets": [{"name": "media"}, {"name": "ro-*", "access": "read-only"}],
        "limits": {
            "connect_timeout": "1s",
            "header_timeout": "2s",
            "idle_timeout": "5s",
            "shutdown_delay": "0s",
            "drain_timeout": "2s",
        },
        "tunnel": {"verify_sni": False},
    }


def _udp_inodes():
    inodes = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            with open(table) as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    if len(fields) > 9:
                        inodes.add(fields[9])
    return inodes


class S3gate:
    """One s3gate process with a generated configuration.

    stdout (the access log) and stderr go to files in `workdir`.
    """

    LOG_FIELDS = ("time", "client", "kind", "method", "host", "port", "bucket", "rule", "decision",
                  "reason", "status", "upstream", "bytes_up", "bytes_down", "duration_ms", "close")

    def __init__(self, config, workdir, name="s3gate"):
        self.binary = s3gate_binary()
        self.config = config
        self.workdir = workdir
        self.config_path = os.path.join(workdir, f"{name}.yaml")
        self.stdout_path = os.path.join(workdir, f"{name}.stdout")
        self.stderr_path = os.path.join(workdir, f"{name}.stderr")
        self.proc = None
        self.baseline_fds = None
        self.port = int(config["listeners"][0]["address"].rsplit(":", 1)[1])
        self.write_config(config)

    def write_config(self, config):
        self.config = config
        with open(self.config_path, "w") as f:
            f.write(to_yaml(config))

    def start(self, timeout=20.0):
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([self.binary, "-c", self.config_path], stdout=self._out,
                                     stderr=self._err, stdin=subprocess.DEVNULL, env=clean_env(),
                                     cwd=self.workdir)

        def accepting():
            if self.proc.poll() is not None:
                raise AssertionError(f"s3gate exited with {self.proc.returncode} at start:\n"
                                     + self.stderr())
            with contextlib.suppress(OSError):
                with socket.create_connection((LOOPBACK, self.port), timeout=0.5):
                    return True
            return False

        wait_until(accepting, timeout, interval=0.05, message="s3gate to accept connections")
        self.baseline_fds = self.stable_fd_count()
        return self

    # process state
    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def fd_count(self):
        """Open descriptors of the process, not counting UDP sockets (the resolver
        opens and keeps those lazily, so they are not a leak)."""
        udp = _udp_inodes()
        n = 0
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                continue
            m = re.match(r"socket:\[(\d+)\]", target)
            if m and m.group(1) in udp:
                continue
            n += 1
        return n

    def stable_fd_count(self, timeout=5.0):
        """The fd count once it has not changed for ~0.3 s."""
        samples = []

        def stable():
            samples.append(self.fd_count())
            return len(samples) >= 4 and len(set(samples[-4:])) == 1

        wait_until(stable, timeout, interval=0.1, message="a stable fd count")
        return samples[-1]

    def wait_fds_back(self, timeout=5.0):
        """Waits until the fd count is back to the one measured after start."""
        return wait_until(lambda: self.fd_count() <= self.baseline_fds, timeout,
                          message=f"fd count back to {self.baseline_fds} (now {self.fd_count()})")

    def fd_listing(self):
        out = []
        for fd in sorted(os.listdir(f"/proc/{self.pid}/fd"), key=int):
            with contextlib.suppress(OSError):
                out.append(f"{fd} -> {os.readlink(f'/proc/{self.pid}/fd/{fd}')}")
        return "\n".join(out)

    # output
    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stdout_text(self):
        with open(self.stdout_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def access_lines(self):
        """Every complete line of the access log, parsed; a line that is not a
        JSON object raises AssertionError."""
        text = self.stdout_text()
        records = []
        for line in text.split("\n")[:-1]:  # the last element is "" or a partial line
            try:
                rec = json.loads(line)
            except ValueError:
                raise AssertionError(f"access log line is not JSON: {line!r}")
            if not isinstance(rec, dict):
                raise AssertionError(f"access log line is not an object: {line!r}")
            records.append(rec)
        return records

    def wait_for_log(self, predicate, timeout=5.0, message="an access-log line"):
        """The first access-log record for which predicate(record) is true."""

        def find():
            for rec in self.access_lines():
                if predicate(rec):
                    return rec
            return None

        try:
            return wait_until(find, timeout, message=message)
        except AssertionError:
            raise AssertionError(f"no {message} within {timeout}s; access log:\n{self.stdout_text()}"
                                 f"\nstderr:\n{self.stderr()[-4000:]}")

    def log_for_client(self, client, timeout=5.0, kind=None):
        """The access-log record of the connection whose client address is `client`."""
        return self.wait_for_log(lambda r: r.get("client") == client and (kind is None or r.get("kind") == kind),
                                 timeout, message=f"access-log line for client {client}")

    def log_contains(self, text):
        return text in self.stdout_text()

    def stderr_contains(self, text):
        return text in self.stderr()

    # lifecycle
    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL after `timeout`. Returns (returncode, killed)."""
        if self.proc is None:
            return None, False
        killed = False
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._out.close()
        self._err.close()
        return self.proc.returncode, killed

    SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer")

    def sanitizer_report(self):
        err = self.stderr()
        for mark in self.SANITIZER_MARKS:
            i = err.find(mark)
            if i >= 0:
                return err[max(0, i - 200):i + 4000]
        return None


# ---------------------------------------------------------------------------
# the binary's build, memory


def sanitized_binary():
    """Whether the binary under test is built with AddressSanitizer (or S3GATE_ASAN is set):
    tests then use smaller sizes and looser memory bounds."""
    global _SANITIZED
    if _SANITIZED is None:
        _SANITIZED = bool(os.environ.get("S3GATE_ASAN"))
        binary = s3gate_binary()
        if binary and not _SANITIZED:
            with open(binary, "rb") as f:
                tail = b""
                for _ in range(1 << 12):  # the binary in 1 MiB pieces, bounded
                    block = f.read(1 << 20)
                    if not block:
                        break
                    if b"__asan_init" in tail + block or b"libasan.so" in tail + block:
                        _SANITIZED = True
                        break
                    tail = block[-32:]
    return _SANITIZED


_SANITIZED = None


def rss_kib(pid):
    """The process's resident set size in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssWatch:
    """Samples a process's VmRSS every 50 ms in a thread; .peak in KiB."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        for _ in range(1 << 20):
            if self._stop.wait(0.05):
                return
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, rss_kib(self.pid))

    def stop(self):
        self._stop.set()
        self._thread.join(2)
        return self.peak


# ---------------------------------------------------------------------------
# upstreams on port 443 / 80 of their own 127.0.0.X (plain-HTTP forwarding)

NEEDS_ROOT = None if os.geteuid() == 0 else "binds ports 80 and 443 on 127.0.0.X: needs root"
RAW_CAP = 1 << 20  # bytes of each scripted upstream connection kept verbatim

_taken_ips = set()


def bind_fresh_ip(port):
    """A listening socket on port `port` of a random, free 127.0.0.X (X in 2..250).
    release_ip(ip) gives the address back."""
    for _ in range(200):
        ip = f"127.0.0.{random.randint(2, 250)}"
        if ip in _taken_ips:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            s.close()
            continue
        _taken_ips.add(ip)
        s.listen(128)
        return ip, s
    raise AssertionError(f"no free 127.0.0.X:{port}")


def fresh_ip(port=443):
    """A 127.0.0.X whose `port` was free a moment ago, reserved until release_ip()."""
    ip, s = bind_fresh_ip(port)
    s.close()
    return ip


def release_ip(ip):
    _taken_ips.discard(ip)


class ExtraPki:
    """Certificates TestPki does not have: a second CA with a good leaf for the
    us-west-2 S3 names, a leaf for other names and an expired leaf (upstream TLS
    failures)."""

    def __init__(self, directory):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
        import datetime

        self.directory = directory
        now = datetime.datetime.now(datetime.timezone.utc)
        pem = serialization.Encoding.PEM
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s3gate second test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=30))
              .not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        self.ca_file = os.path.join(directory, "ca2.pem")
        with open(self.ca_file, "wb") as f:
            f.write(ca.public_bytes(pem))

        def leaf(name, names, before, after):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = (x509.CertificateBuilder()
                    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                    .issuer_name(ca_name).public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now + before).not_valid_after(now + after)
                    .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                                   critical=False)
                    .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                   critical=False)
                    .sign(ca_key, hashes.SHA256()))
            cert_path = os.path.join(directory, f"{name}.pem")
            key_path = os.path.join(directory, f"{name}.key")
            with open(cert_path, "wb") as f:
                f.write(cert.public_bytes(pem) + ca.public_bytes(pem))
            with open(key_path, "wb") as f:
                f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
            return cert_path, key_path

        day = datetime.timedelta(days=1)
        s3_names = [f"*.{S3_SUFFIX}", S3_SUFFIX]
        self.good = leaf("good", s3_names, -day, day)
        self.wrong_name = leaf("wrong-name", ["other.example.com", "*.s3.eu-west-1.amazonaws.com"],
                               -day, day)
        self.expired = leaf("expired", s3_names, -10 * day, -2 * day)

    @staticmethod
    def context(cert_key):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert_key)
        return ctx


def http_response(status=200, body=b"", headers=(), reason=None, version="1.1", length=True):
    """Response bytes with Content-Length (unless length=False) and `headers` (name, value) pairs."""
    reason = reason if reason is not None else {200: "OK", 204: "No Content", 304: "Not Modified",
                                                 100: "Continue", 403: "Forbidden"}.get(status, "X")
    lines = [f"HTTP/{version} {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*pieces, trailer=b""):
    """A chunked body: one chunk per piece, the last chunk and `trailer`."""
    out = b""
    for p in pieces:
        out += b"%x\r\n" % len(p) + p + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


def http_request(method, url, headers=(), body=b"", version="1.1", host=True, length=None):
    """Absolute-form request bytes; Host from the URL unless host=False."""
    authority = re.match(r"^http://([^/?]+)", url).group(1)
    lines = [f"{method} {url} HTTP/{version}"]
    if host:
        lines.append(f"Host: {authority}")
    lines += [f"{k}: {v}" for k, v in headers]
    if length is None and body:
        length = len(body)
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Reader:
    """Buffered reads from one upstream connection, every byte recorded."""

    def __init__(self, sock, rec):
        self.sock = sock
        self.rec = rec
        self.buf = bytearray()

    def _recv(self):
        try:
            data = self.sock.recv(1 << 18)
        except (ConnectionResetError, ssl.SSLError, socket.timeout):
            data = b""
        if data:
            self.rec["bytes_in"] += len(data)
            room = RAW_CAP - len(self.rec["raw"])
            if room > 0:
                self.rec["raw"] += data[:room]
        return data

    def more(self):
        data = self._recv()
        self.buf += data
        return bool(data)

    def head(self):
        for _ in range(100000):
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                head = bytes(self.buf[:i + 4])
                del self.buf[:i + 4]
                return head
            if len(self.buf) > (1 << 17) or not self.more():
                return None
        return None

    def line(self):
        for _ in range(100000):
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i + 2])
                del self.buf[:i + 2]
                return line
            if not self.more():
                return None
        return None

    def exact(self, n, sink):
        """Passes the next n bytes to sink(bytes); False at a premature EOF."""
        take = min(n, len(self.buf))
        if take:
            sink(bytes(self.buf[:take]))
            del self.buf[:take]
            n -= take
        while n > 0:
            data = self._recv()
            if not data:
                return False
            if len(data) > n:
                self.buf += data[n:]
                data = data[:n]
            sink(data)
            n -= len(data)
        return True


class ScriptedUpstream(_TcpServer):
    """An HTTP/1.1 server on port 443 (TLS) or 80 (plain) of its own 127.0.0.X,
    or on `port` of 127.0.0.1 when given (for tunnels: no root needed).

    Each connection reads requests (head, then a Content-Length or chunked body)
    and answers each with responder(req), a list of actions: bytes to send, a
    float to sleep, an iterable of bytes to stream, "close" (TLS close_notify or
    FIN, then close), "fin" (close the socket without close_notify), "rst".
    on_head(req) may return bytes to send before the body is read (the 100
    Continue). Records: self.connections (per connection: raw, bytes_in,
    requests, sni, session_reused, tls_error, done), self.requests.
    """

    name = "scripted"

    def __init__(self, responder=None, tls_ctx=None, plain=False, on_head=None, name="upstream",
                 port=None):
        self.plain = plain
        if port is None:
            self.port = 80 if plain else 443
            ip, listener = bind_fresh_ip(self.port)
        else:
            ip, listener = LOOPBACK, None
        self.ip = ip
        self.responder = responder or (lambda req: [http_response(200, b"ok:" + req["target"].encode())])
        self.on_head = on_head if on_head is not None else self.continue_if_expected
        self.ctx = None
        if not plain:
            self.ctx = tls_ctx or TestPki.get().server_context()
            self.ctx.sni_callback = self._on_sni
        self._sni = threading.local()
        self.requests = []
        self.name = name
        super().__init__(host=ip, port=port or 0, listener=listener)

    @staticmethod
    def continue_if_expected(req):
        if any(k.lower() == "expect" and v.lower() == "100-continue" for k, v in req["headers"]):
            return b"HTTP/1.1 100 Continue\r\n\r\n"
        return b""

    def _on_sni(self, sslobj, server_name, ctx):
        self._sni.value = server_name

    def new_record(self, record):
        record.update({"raw": bytearray(), "requests": 0, "sni": None, "session_reused": None,
                       "tls_error": None})

    def handle(self, conn, rec):
        sock = conn
        try:
            conn.settimeout(60)
            if self.ctx is not None:
                self._sni.value = None
                try:
                    sock = self.ctx.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    rec["tls_error"] = repr(exc)
                    return
                rec["sni"] = self._sni.value
                rec["session_reused"] = sock.session_reused
                rec["version"] = sock.version()
            self._serve(sock, rec)
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _serve(self, sock, rec):
        reader = _Reader(sock, rec)
        for index in range(1000):
            head = reader.head()
            if head is None:
                rec["eof_seen"] = True
                return
            lines = head[:-4].decode("latin-1").split("\r\n")
            method, target, version = (lines[0].split(" ", 2) + ["", ""])[:3]
            headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
            req = {"conn": rec["index"], "index": index, "head": head, "method": method,
                   "target": target, "version": version, "headers": headers, "body": b"",
                   "body_len": 0, "raw_body": b"", "complete": True}
            with self._lock:
                self.requests.append(req)
            rec["requests"] += 1
            early = self.on_head(req) if self.on_head else b""
            if early:
                sock.sendall(early)
            digest = hashlib.sha256()

            def take(data, req=req, digest=digest):
                digest.update(data)
                req["body_len"] += len(data)
                if len(req["body"]) < RAW_CAP:
                    req["body"] += data

            hmap = {k.lower(): v for k, v in headers}
            if "transfer-encoding" in hmap:
                raw = bytearray()
                for _ in range(100000):
                    line = reader.line()
                    if line is None:
                        req["complete"] = False
                        break
                    raw += line
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        for _ in range(1000):
                            t = reader.line()
                            if t is None:
                                req["complete"] = False
                                break
                            raw += t
                            if t == b"\r\n":
                                break
                        break
                    data = bytearray()
                    if not reader.exact(size + 2, data.extend):
                        req["complete"] = False
                        break
                    raw += data
                    take(bytes(data[:-2]))
                req["raw_body"] = bytes(raw)
            elif "content-length" in hmap:
                req["complete"] = reader.exact(int(hmap["content-length"]), take)
            req["sha256"] = digest.hexdigest()
            if not req["complete"]:
                return
            for action in self.responder(req):
                if isinstance(action, (bytes, bytearray)):
                    sock.sendall(action)
                    rec["bytes_out"] += len(action)
                elif isinstance(action, (int, float)):
                    time.sleep(action)
                elif action == "close":
                    with contextlib.suppress(OSError, ssl.SSLError):
                        sock.unwrap() if self.ctx is not None else sock.shutdown(socket.SHUT_WR)
                    return
                elif action == "fin":
                    # TCP FIN without TLS close_notify (SSLSocket.shutdown drops the TLS state).
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_WR)
                    return
                elif action == "rst":
                    rst_close(sock)
                    return
                else:
                    for piece in action:
                        sock.sendall(piece)
                        rec["bytes_out"] += len(piece)

    def wait_requests(self, n, timeout=10.0):
        return wait_until(lambda: len(self.requests) >= n, timeout,
                          message=f"{n} request(s) at the upstream (have {len(self.requests)})")

    def stop(self):
        super().stop()
        if self.ip != LOOPBACK:
            release_ip(self.ip)


class TcpRelay(_TcpServer):
    """A TCP relay on 127.0.0.X:443 to `target` (host, port); TLS passes through.
    len(self.connections) counts the connections it accepted."""

    name = "relay"

    def __init__(self, target):
        self.target = target
        ip, listener = bind_fresh_ip(443)
        self.ip = ip
        super().__init__(host=ip, port=443, listener=listener)

    def handle(self, conn, record):
        with socket.create_connection(self.target, timeout=5) as up:
            pump = threading.Thread(target=self._pump, args=(up, conn), daemon=True)
            pump.start()
            self._pump(conn, up)
            pump.join(120)

    @staticmethod
    def _pump(src, dst):
        src.settimeout(120)
        with contextlib.suppress(OSError):
            for _ in iter(int, 1):
                data = src.recv(1 << 18)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)

    def stop(self):
        super().stop()
        release_ip(self.ip)


# ---------------------------------------------------------------------------
# a client that reads framed responses on a kept-alive connection


class Reply(Response):
    """One response read by HttpClient: the head, 1xx heads before it, the body
    (de-chunked) and raw_body (as sent, for chunked)."""

    def __init__(self):
        super().__init__(0, "", {}, b"", b"")
        self.head = b""
        self.interim = []  # (status, head) of 1xx heads
        self.raw_body = b""
        self.framing = None

    def __repr__(self):
        return f"<Reply {self.status} {self.headers!r} body={self.body[:200]!r}>"


class HttpClient:
    """A client connection to the proxy that sends requests and reads framed
    responses (length, chunked, to close), so that a connection can be kept alive."""

    def __init__(self, port, timeout=15.0):
        self.sock = open_client(port, timeout)
        self.name = client_name(self.sock)
        self.buf = bytearray()
        self.timeout = timeout
        self.eof = False

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _more(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no complete response in time (buffered {bytes(self.buf[:300])!r})")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 18)
        except socket.timeout:
            return True
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _head(self, deadline):
        for _ in range(1 << 20):
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                head = bytes(self.buf[:i + 4])
                del self.buf[:i + 4]
                return head
            if not self._more(deadline):
                return None
        return None

    def _line(self, deadline):
        for _ in range(1 << 20):
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i + 2])
                del self.buf[:i + 2]
                return line
            if not self._more(deadline):
                raise AssertionError("EOF inside a chunked body")
        raise AssertionError("no line")

    def _exact(self, n, deadline, sink):
        while n > 0:
            if not self.buf and not self._more(deadline):
                raise AssertionError(f"EOF with {n} body bytes missing")
            take = min(n, len(self.buf))
            sink(bytes(self.buf[:take]))
            del self.buf[:take]
            n -= take

    def read_response(self, method="GET", timeout=None, sink=None, stop_at_interim=False):
        """One response; 1xx heads are collected in reply.interim. sink(bytes)
        receives the body instead of reply.body. None if the connection closed first."""
        deadline = time.monotonic() + (timeout or self.timeout)
        r = Reply()
        for _ in range(10):
            head = self._head(deadline)
            if head is None:
                return None
            lines = head[:-4].decode("latin-1").split("\r\n")
            m = re.match(r"^HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
            if not m:
                raise AssertionError(f"bad status line {lines[0]!r}")
            status = int(m.group(1))
            if 100 <= status < 200:
                r.interim.append((status, head))
                if stop_at_interim:
                    return r
                continue
            r.status, r.reason, r.head = status, m.group(2) or "", head
            r.raw_head = head
            for line in lines[1:]:
                k, _, v = line.partition(":")
                r.headers.setdefault(k.strip().lower(), []).append(v.strip())
            break
        parts = []
        raw = []
        out = sink or parts.append
        te = r.header("transfer-encoding")
        cl = r.header("content-length")
        if method == "HEAD" or r.status in (204, 304):
            r.framing = "none"
        elif te:
            r.framing = "chunked"
            for _ in range(1 << 24):
                line = self._line(deadline)
                raw.append(line)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    for _ in range(1000):
                        t = self._line(deadline)
                        raw.append(t)
                        if t == b"\r\n":
                            break
                    break
                data = []
                self._exact(size + 2, deadline, data.append)
                data = b"".join(data)
                raw.append(data)
                out(data[:-2])
        elif cl is not None:
            r.framing = "length"
            self._exact(int(cl), deadline, out)
        else:
            r.framing = "close"
            for _ in range(1 << 24):
                if self.buf:
                    out(bytes(self.buf))
                    self.buf.clear()
                if not self._more(deadline):
                    break
        r.body = b"".join(parts)
        r.raw_body = b"".join(raw)
        return r

    def closed(self, timeout=3.0):
        """True when the proxy closes the connection (nothing more is read) within timeout."""
        deadline = time.monotonic() + timeout
        for _ in range(1 << 16):
            if self.eof:
                return not self.buf
            if self.buf:
                return False
            try:
                self._more(deadline)
            except AssertionError:
                return False
        return False


# ---------------------------------------------------------------------------
# moto's S3 over TLS


class MotoMixin:
    """For a ProxyTestCase class: moto's S3 over TLS for the whole class
    (cls.moto), its endpoint URL through S3 names (cls.endpoint), and an aws CLI
    config file (cls.aws_config) with AWS_CONFIG_EXTRA appended. Put it first
    in the bases: class T(h.MotoMixin, h.ProxyTestCase)."""

    AWS_CONFIG_EXTRA = ""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.moto = MotoTlsServer(cls.pki, cls.tmp)
            cls.moto.wait_ready()
        except Exception:
            cls.tearDownClass()
            raise
        cls.upstream_ports = [cls.moto.port]
        cls.endpoint = f"https://s3.{REGION}.amazonaws.com:{cls.moto.port}"
        cls.aws_config = os.path.join(cls.tmp, "aws-config")
        with open(cls.aws_config, "w") as f:
            f.write(f"[default]\nregion = {REGION}\ns3 =\n    addressing_style = virtual\n"
                    + cls.AWS_CONFIG_EXTRA)

    @classmethod
    def tearDownClass(cls):
        moto = getattr(cls, "moto", None)
        if moto is not None:
            moto.stop()
        super().tearDownClass()

    def run_aws(self, args, proxy=None, timeout=60):
        """The aws CLI against moto through `proxy` (default: the proxy, no
        credentials), trusting the test CA; one attempt, no metadata lookups."""
        env = clean_env({
            "HTTPS_PROXY": proxy or f"http://127.0.0.1:{self.proxy.port}",
            "AWS_CA_BUNDLE": self.pki.ca_file,
            "AWS_CONFIG_FILE": self.aws_config,
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(self.tmp, "no-credentials"),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_RETRY_MODE": "standard",
            "AWS_MAX_ATTEMPTS": "1",
        })
        env.pop("AWS_PROFILE", None)
        env.pop("AWS_ENDPOINT_URL", None)
        return subprocess.run([shutil.which("aws")] + list(args) + ["--endpoint-url", self.endpoint],
                              env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


def moto_available():
    """None when moto's server and boto3 can be used, else the reason."""
    try:
        import boto3  # noqa: F401
        import moto  # noqa: F401
        import moto.server  # noqa: F401
        import flask  # noqa: F401
        import werkzeug  # noqa: F401
    except Exception as exc:  # ImportError or a broken install
        return f"moto server / boto3 not importable: {exc!r}"
    return None


class MotoTlsServer:
    """`python3 -m moto.server` on 127.0.0.1 with the test leaf certificate."""

    def __init__(self, pki, workdir, port=None, host=LOOPBACK):
        self.pki = pki
        self.host = host
        self.port = port or free_port(host)
        self.log_path = os.path.join(workdir, "moto.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", host, "-p", str(self.port),
             "-c", pki.cert_file, "-k", pki.key_file],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=clean_env({"PYTHONDONTWRITEBYTECODE": "1"}))

    def wait_ready(self, timeout=60.0):
        ctx = self.pki.client_context()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"moto exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    with ctx.wrap_socket(s, server_hostname="localhost") as t:
                        t.sendall(b"GET /moto-api/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                        t.settimeout(5)
                        return t.recv(64).startswith(b"HTTP/1.")
            except (OSError, ssl.SSLError):
                return False

        wait_until(ready, timeout, interval=0.2, message="moto to answer over TLS")
        return self

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-4000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        if self.host != LOOPBACK:
            release_ip(self.host)


# ---------------------------------------------------------------------------
# unittest base class


class ProxyTestCase(unittest.TestCase):
    """Per class: a PKI, a DNS server (every name -> 127.0.0.1), an echo, a sink,
    a 1 MiB source, a TLS HTTP upstream, a refusing port and a silent port.
    Per test: start_proxy(overrides) starts a fresh s3gate; cleanup stops it and
    fails the test if it did not exit 0 on SIGTERM or a sanitizer spoke."""

    check_exit = True  # a test may set self.check_exit = False (e.g. it killed the process)

    @classmethod
    def setUpClass(cls):
        binary = s3gate_binary()
        if binary is None:
            reason = (f"no s3gate binary (S3GATE_BIN={os.environ.get('S3GATE_BIN')!r}; "
                      "build it or set S3GATE_BIN)")
            print(f"SKIP {cls.__module__}.{cls.__name__}: {reason}", file=sys.stderr)
            raise unittest.SkipTest(reason)
        cls.tmp = tempfile.mkdtemp(prefix=f"s3gate-{cls.__name__}-")
        cls.pki = TestPki.get()
        cls.dns = DnsServer()
        cls.echo = EchoServer()
        cls.sink = SinkServer()
        cls.source = SourceServer(1 << 20)
        cls.tls = TlsHttpServer(cls.pki)
        cls.refusing = refusing_port()
        cls.silent = SilentPort()
        cls.upstream_ports = [cls.echo.port, cls.sink.port, cls.source.port, cls.tls.port,
                              cls.refusing, cls.silent.port]

    @classmethod
    def tearDownClass(cls):
        for name in ("dns", "echo", "sink", "source", "tls", "silent"):
            obj = getattr(cls, name, None)
            if obj is not None:
                obj.stop()
        if getattr(cls, "tmp", None) and not os.environ.get("S3GATE_KEEP_TMP"):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.proxy = None
        self.check_exit = True
        self.dns.clear()
        self.workdir = tempfile.mkdtemp(prefix=self._testMethodName + "-", dir=self.tmp)

    def config(self, overrides=None):
        self.proxy_port = free_port()
        self.admin_port = free_port()
        cfg = base_config(self.proxy_port, self.admin_port, self.dns.port, self.upstream_ports)
        return deep_merge(cfg, overrides or {})

    def start_proxy(self, overrides=None, config=None):
        cfg = config if config is not None else self.config(overrides)
        self.proxy = S3gate(cfg, self.workdir)
        self.addCleanup(self._stop_proxy, self.proxy)
        self.proxy.start()
        self.dns.reset_counts()
        return self.proxy

    def _stop_proxy(self, proxy):
        code, killed = proxy.stop()
        report = proxy.sanitizer_report()
        if report:
            self.fail(f"sanitizer report in s3gate's stderr:\n{report}")
        if self.check_exit:
            self.assertFalse(killed, "s3gate did not exit within 10 s of SIGTERM")
            self.assertEqual(code, 0, f"s3gate exit status after SIGTERM; stderr:\n{proxy.stderr()[-4000:]}")

    def metrics_text(self):
        """The admin listener's /metrics page."""
        return http_get(self.admin_port, "/metrics").body.decode()

    # assertions
    def assert_settled(self, proxy=None, timeout=5.0):
        """The process is alive and its fd count is back to the starting value."""
        proxy = proxy or self.proxy
        self.assertTrue(proxy.alive(), f"s3gate died; stderr:\n{proxy.stderr()[-4000:]}")
        try:
            proxy.wait_fds_back(timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nopen descriptors:\n{proxy.fd_listing()}")

    def assert_log_shape(self, rec):
        for field in S3gate.LOG_FIELDS:
            self.assertIn(field, rec, f"access-log field {field!r} missing in {rec}")
        self.assertRegex(rec["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        for field in ("port", "status", "bytes_up", "bytes_down", "duration_ms"):
            self.assertIsInstance(rec[field], int, f"{field} in {rec}")
        self.assertIn(rec["decision"], ("allow", "deny", "report"))

    def assert_log(self, rec, **expected):
        self.assert_log_shape(rec)
        for k, v in expected.items():
            self.assertEqual(rec.get(k), v, f"access-log field {k!r} in {rec}")

    def assert_error(self, resp, status, error, details):
        """An error response as SPEC section 3 "Errors" describes it."""
        self.assertIsNotNone(resp, "the proxy closed without a response")
        self.assertEqual(resp.status, status, repr(resp))
        ps = resp.proxy_status()
        self.assertIsNotNone(ps, f"no Proxy-Status header: {resp!r}")
        self.assertEqual(ps.get("proxy"), "s3gate", repr(resp))
        self.assertEqual(ps.get("error"), error, repr(resp))
        self.assertEqual(ps.get("details"), details, repr(resp))
        conn = [v.lower() for v in resp.headers.get("connection", [])]
        self.assertIn("close", conn, f"no Connection: close: {resp!r}")
        body = resp.body.decode("utf-8", "replace")
        self.assertTrue(body.strip(), f"empty error body: {resp!r}")
        self.assertNotIn("\n", body.strip("\r\n"), f"error body is not one line: {body!r}")
        return body


@unittest.skipIf(NEEDS_ROOT is not None, NEEDS_ROOT or "")
class ForwardTestCase(ProxyTestCase):
    """s3gate with plain HTTP sent on over TLS (the test CA) to a ScriptedUpstream
    on 127.0.0.X:443 (or :80 for plain), the S3 names of us-west-2 pinned to it."""

    def setUp(self):
        super().setUp()
        self.upstreams = []

    def upstream(self, **kw):
        up = ScriptedUpstream(**kw)
        self.upstreams.append(up)
        self.addCleanup(up.stop)
        return up

    def forward_config(self, ip, overrides=None, tls=True, ca_file=None):
        cfg = self.config({
            "dns": {"pins": [{"host": f"*.{S3_SUFFIX}", "addresses": [ip]},
                             {"host": S3_SUFFIX, "addresses": [ip]}]},
            "http": {"upstream_tls": tls, "ca_file": ca_file or self.pki.ca_file},
            "buckets": [{"name": "media"}, {"name": "ro-*", "access": "read-only"}],
        })
        return deep_merge(cfg, overrides or {})

    def start_forward(self, up, overrides=None, ca_file=None):
        return self.start_proxy(config=self.forward_config(up.ip, overrides, tls=not up.plain,
                                                           ca_file=ca_file))

    def client(self):
        c = HttpClient(self.proxy.port)
        self.addCleanup(c.close)
        return c

    def log_lines(self, client, n, timeout=5.0):
        """The access-log lines of `client` (an HttpClient), once there are at least n."""
        wait_until(lambda: len([r for r in self.proxy.access_lines()
                                if r.get("client") == client.name]) >= n, timeout,
                   message=f"{n} access-log line(s) for {client.name}:\n{self.proxy.stdout_text()}")
        return [r for r in self.proxy.access_lines() if r.get("client") == client.name]
