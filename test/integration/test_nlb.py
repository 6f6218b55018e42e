"""Behind an NLB, through the real binary: PROXY protocol v1/v2 (client address,
via, vpce, LOCAL health checks, trusted_proxies), live reload on SIGHUP, the
graceful drain on SIGTERM/SIGINT, and the systemd notify protocol (READY=1,
RELOADING=1, STOPPING=1, WATCHDOG=1) read from a datagram socket we own.

The helpers here (PROXY header builders, NotifySocket, GateProcess, metric())
are imported by test_tls_listeners and test_fleet."""

import contextlib
import ctypes
import ctypes.util
import errno
import http.client
import ipaddress
import os
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import unittest

import harness as h

# ---------------------------------------------------------------------------
# PROXY protocol headers (HAProxy's proxy-protocol.txt)

PP2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_TYPE_AWS = 0xEA
PP2_SUBTYPE_AWS_VPCE_ID = 0x01


def pp_v1(source, destination=("127.0.0.1", 3128)):
    """A v1 line: PROXY TCP4|TCP6 src dst sport dport CRLF; source/destination are (ip, port)."""
    family = "TCP6" if ":" in source[0] else "TCP4"
    return f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode()


def pp_v2(source=None, destination=("127.0.0.1", 3128), local=False, vpce=None, tlvs=()):
    """A v2 header. source None: family AF_UNSPEC with no address block. local:
    the LOCAL command (health checks). vpce: the AWS TLV 0xEA subtype 0x01.
    tlvs: extra (type, value bytes) pairs."""
    command = 0x20 | (0x0 if local else 0x1)
    if source is None:
        family, block = 0x00, b""
    else:
        src = ipaddress.ip_address(source[0])
        dst = ipaddress.ip_address(destination[0])
        if src.version != dst.version:
            dst = ipaddress.ip_address("::1" if src.version == 6 else "127.0.0.1")
        family = 0x11 if src.version == 4 else 0x21
        block = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    tail = b""
    if vpce is not None:
        value = bytes([PP2_SUBTYPE_AWS_VPCE_ID]) + vpce.encode()
        tail += struct.pack("!BH", PP2_TYPE_AWS, len(value)) + value
    for kind, value in tlvs:
        tail += struct.pack("!BH", kind, len(value)) + value
    body = block + tail
    return PP2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(body)) + body


def get_ping(host="127.0.0.1"):
    return f"GET /ping HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def connect_after(port, preamble, target, timeout=10.0):
    """Opens a connection, sends `preamble` (a PROXY header) and CONNECT target.
    Returns (sock, Response or None)."""
    sock = h.open_client(port, timeout)
    sock.sendall(preamble + h.connect_request(target))
    resp = h.read_head(sock, timeout)
    if resp is not None and not 200 <= resp.status < 300:
        rest, resp.end = h.recv_until_eof(sock, timeout)
        resp.body = resp.rest + rest
    return sock, resp


# ---------------------------------------------------------------------------
# systemd's notify socket, played by us


class NotifySocket:
    """A Unix datagram socket to hand to s3gate as NOTIFY_SOCKET. A thread
    records every datagram with its arrival time (time.monotonic())."""

    def __init__(self):
        # Short path: sun_path holds 108 bytes.
        self.directory = tempfile.mkdtemp(prefix="sdn-")
        self.path = os.path.join(self.directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages = []  # (time, line): one per newline-separated assignment
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def _run(self):
        for _ in iter(int, 1):  # until stopped; each pass waits at most 0.1 s
            if self._stop.is_set():
                return
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            with self._lock:
                for line in data.decode("utf-8", "replace").split("\n"):
                    if line:
                        self.messages.append((now, line))

    def lines(self):
        with self._lock:
            return [m for _, m in self.messages]

    def times(self, line):
        with self._lock:
            return [t for t, m in self.messages if m == line]

    def wait_for(self, line, count=1, timeout=5.0):
        """Waits until `line` has arrived `count` times."""
        return h.wait_until(lambda: len(self.times(line)) >= count, timeout,
                            message=f"{count} x {line!r} on the notify socket (got {self.lines()})")

    def env(self, watchdog_usec=None):
        out = {"NOTIFY_SOCKET": self.path}
        if watchdog_usec is not None:
            out["WATCHDOG_USEC"] = str(watchdog_usec)
        return out

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


# ---------------------------------------------------------------------------
# the process, with an environment and an admin-port readiness check


class GateProcess(h.S3gate):
    """h.S3gate with extra environment variables (NOTIFY_SOCKET, WATCHDOG_USEC).
    Ready when the admin listener answers /ping: a probe connection to a proxy
    listener would be a client (on a TLS listener, a failed handshake)."""

    def __init__(self, config, workdir, name="s3gate", env=None):
        super().__init__(config, workdir, name)
        self.env = env or {}
        self.admin_port = int(config["admin"]["address"].rsplit(":", 1)[1])

    def start(self, timeout=20.0):
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        self.proc = h.subprocess.Popen([self.binary, "-c", self.config_path], stdout=self._out,
                                       stderr=self._err, stdin=h.subprocess.DEVNULL,
                                       env=h.clean_env(self.env), cwd=self.workdir)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"s3gate exited with {self.proc.returncode} at start:\n"
                                     + self.stderr())
            with contextlib.suppress(OSError, http.client.HTTPException):
                return admin_get(self.admin_port, "/ping", timeout=0.5)[0] in (200, 503)
            return False

        h.wait_until(ready, timeout, interval=0.05, message="s3gate's admin /ping")
        self.baseline_fds = self.stable_fd_count()
        return self

    def wait_exit(self, timeout):
        """The exit status, or AssertionError if still running after `timeout`."""
        try:
            return self.proc.wait(timeout)
        except h.subprocess.TimeoutExpired:
            raise AssertionError(f"s3gate still running {timeout}s later; stderr:\n"
                                 f"{self.stderr()[-3000:]}") from None


def admin_get(port, path, timeout=5.0):
    conn = http.client.HTTPConnection(h.LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


_SAMPLE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def metric(admin_port, name, **labels):
    """The value of one series (labels matched exactly) in a scrape; 0 when absent."""
    status, body = admin_get(admin_port, "/metrics")
    if status != 200:
        raise AssertionError(f"/metrics answered {status}")
    for line in body.decode().splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        found = dict(_LABEL.findall(m.group(2) or ""))
        if found == {k: str(v) for k, v in labels.items()}:
            return float(m.group(3))
    return 0.0


def connect_refused(port, timeout=1.0):
    """True when a TCP connect to 127.0.0.1:port is refused."""
    try:
        with socket.create_connection((h.LOOPBACK, port), timeout=timeout):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


class GateTestCase(h.ProxyTestCase):
    """ProxyTestCase whose start_gate() takes an environment and a notify socket."""

    def start_gate(self, overrides=None, config=None, env=None, name="s3gate"):
        cfg = config if config is not None else self.config(overrides)
        gate = GateProcess(cfg, self.workdir, name=name, env=env)
        self.proxy = gate
        self.addCleanup(self._stop_proxy, gate)
        gate.start()
        self.dns.reset_counts()
        return gate

    def notify_socket(self):
        ns = NotifySocket()
        self.addCleanup(ns.close)
        return ns

    def target(self, port, bucket="media"):
        return f"{h.s3_name(bucket)}:{port}"


# ---------------------------------------------------------------------------
# 1. PROXY protocol


class ProxyProtocolTest(GateTestCase):
    def start_pp(self, **extra):
        overrides = {"listeners": [{"address": "", "proxy_protocol": True}]}
        overrides.update(extra)
        cfg = self.config(overrides)
        cfg["listeners"][0]["address"] = f"{h.LOOPBACK}:{self.proxy_port}"
        return self.start_gate(config=cfg)

    def tunnel_echo(self, header, bucket="media"):
        sock, resp = connect_after(self.proxy.port, header, self.target(self.echo.port, bucket))
        self.addCleanup(sock.close)
        return sock, resp

    def test_v1_source_is_the_client_and_via_the_peer(self):
        self.start_pp()
        sock, resp = self.tunnel_echo(pp_v1(("127.0.0.42", 50123)))
        self.assertEqual(resp.status, 200, repr(resp))
        peer = h.client_name(sock)
        self.assertEqual(h.echo_roundtrip(sock, b"ping through v1"), b"ping through v1")
        sock.close()
        rec = self.proxy.log_for_client("127.0.0.42:50123")
        self.assert_log(rec, kind="connect", decision="allow", status=200, bucket="media",
                        bytes_up=15, bytes_down=15)
        self.assertEqual(rec.get("via"), peer)
        self.assertNotIn("vpce", rec)

    def test_v2_ipv4_with_vpce_tlv(self):
        self.start_pp()
        header = pp_v2(("127.0.0.43", 40001), ("127.0.0.1", self.proxy.port), vpce="vpce-0931f00d",
                       tlvs=[(0x04, b"noop"), (PP2_TYPE_AWS, b"\x02other-subtype")])
        sock, resp = self.tunnel_echo(header)
        self.assertEqual(resp.status, 200, repr(resp))
        peer = h.client_name(sock)
        self.assertEqual(h.echo_roundtrip(sock, b"v2"), b"v2")
        sock.close()
        rec = self.proxy.log_for_client("127.0.0.43:40001")
        self.assert_log(rec, decision="allow", status=200)
        self.assertEqual(rec.get("via"), peer)
        self.assertEqual(rec.get("vpce"), "vpce-0931f00d")

    def test_v2_ipv6_source_logged_bracketed(self):
        self.start_pp(clients=["127.0.0.0/8", "2001:db8::/32"])
        sock, resp = self.tunnel_echo(pp_v2(("2001:db8::7", 443), ("2001:db8::1", 3128)))
        self.assertEqual(resp.status, 200, repr(resp))
        sock.close()
        rec = self.proxy.log_for_client("[2001:db8::7]:443")
        self.assert_log(rec, decision="allow")

    def test_header_source_decides_clients(self):
        # 10.9.8.7 is outside clients (127.0.0.0/8) although the peer is loopback.
        self.start_pp()
        for header in (pp_v1(("10.9.8.7", 1111)), pp_v2(("10.9.8.7", 1112))):
            with self.subTest(version=header[:5]):
                sock, resp = self.tunnel_echo(header)
                self.assert_error(resp, 403, "http_request_denied", "client_not_allowed")
        for port in (1111, 1112):
            rec = self.proxy.log_for_client(f"10.9.8.7:{port}")
            self.assert_log(rec, decision="deny", reason="client_not_allowed", status=403)

    def test_header_source_decides_bucket_rule_clients(self):
        self.start_pp(clients=["127.0.0.0/8", "10.0.0.0/8"],
                      buckets=[{"name": "media", "clients": ["10.1.0.0/16"]}])
        sock, resp = self.tunnel_echo(pp_v2(("10.1.2.3", 2001)))
        self.assertEqual(resp.status, 200, repr(resp))
        sock.close()
        sock, resp = self.tunnel_echo(pp_v1(("10.2.3.4", 2002)))
        self.assert_error(resp, 403, "http_request_denied", "bucket_not_allowed")
        self.assert_log(self.proxy.log_for_client("10.1.2.3:2001"), decision="allow")
        self.assert_log(self.proxy.log_for_client("10.2.3.4:2002"), decision="deny",
                        reason="bucket_not_allowed")

    def test_v2_local_is_the_peer_and_ping_works(self):
        self.start_pp()
        for header in (pp_v2(local=True), pp_v2(("10.9.8.7", 9), local=True)):
            with self.subTest(header=header.hex()):
                resp, peer = h.send_raw(self.proxy.port, header + get_ping())
                self.assertIsNotNone(resp, "closed without answering /ping after a LOCAL header")
                self.assertEqual((resp.status, resp.body), (200, b"OK"))
                rec = self.proxy.log_for_client(peer)
                self.assertEqual(rec.get("kind"), "local")
                self.assertEqual(rec.get("via"), peer)
        # A v1 UNKNOWN line is the same thing in text.
        resp, peer = h.send_raw(self.proxy.port, b"PROXY UNKNOWN\r\n" + get_ping())
        self.assertEqual(resp.status if resp else None, 200)

    def test_missing_header_closes_without_answer(self):
        self.start_pp()
        for data in (get_ping(), h.connect_request(self.target(self.echo.port))):
            with self.subTest(data=data[:8]):
                resp, peer = h.send_raw(self.proxy.port, data, timeout=5)
                self.assertIsNone(resp, f"an HTTP answer without a PROXY header: {resp!r}")
                rec = self.proxy.log_for_client(peer)
                self.assertEqual(rec.get("decision"), "deny")
                self.assertEqual(rec.get("status"), 0)
                self.assertTrue(rec.get("close", "").startswith("bad_proxy_header"), rec)
        self.assert_settled()

    def test_malformed_header_closes_without_answer(self):
        self.start_pp()
        bad = [
            b"PROXY TCP4 10.1.2.3 127.0.0.1 99999 3128\r\n",   # port out of range
            b"PROXY TCP4 10.1.2.3 127.0.0.1 1 2 3\r\n",        # a field too many
            b"PROXY TCP4 10.1.2.3 127.0.0.1 1 2\n",            # LF without CR
            b"PROXY TCP6 10.1.2.3 127.0.0.1 1 2\r\n",          # v4 address under TCP6
            PP2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12,  # version 3
            PP2_SIGNATURE + b"\x21\x12\x00\x0c" + b"\x00" * 12,  # UDP
            pp_v2(("10.1.2.3", 5), tlvs=[(PP2_TYPE_AWS, b"")]),  # AWS TLV without a subtype
            pp_v2(("10.1.2.3", 5), vpce="bad id"),               # not visible ASCII
        ]
        for data in bad:
            with self.subTest(header=data):
                resp, _ = h.send_raw(self.proxy.port, data + get_ping(), timeout=5)
                self.assertIsNone(resp, f"an HTTP answer after a bad header: {resp!r}")
        self.assert_settled()

    def test_partial_header_then_silence_times_out(self):
        self.start_pp()
        for data in (b"PROXY TCP4 10.1.2.3 ", PP2_SIGNATURE[:8]):
            with self.subTest(data=data):
                start = time.monotonic()
                resp, _ = h.send_raw(self.proxy.port, data, timeout=5)
                self.assertIsNone(resp)
                self.assertLess(time.monotonic() - start, 4.0, "not closed at header_timeout (2 s)")

    def test_header_split_across_reads(self):
        self.start_pp()
        header = pp_v2(("127.0.0.44", 4444), vpce="vpce-split")
        sock = h.open_client(self.proxy.port)
        self.addCleanup(sock.close)
        for piece in (header[:5], header[5:17], header[17:], get_ping()):
            sock.sendall(piece)
            time.sleep(0.05)
        resp = h.read_head(sock)
        self.assertEqual(resp.status if resp else None, 200)
        rec = self.proxy.log_for_client("127.0.0.44:4444")
        self.assertEqual(rec.get("vpce"), "vpce-split")

    def test_untrusted_peer_gets_403(self):
        self.start_pp(trusted_proxies=["10.0.0.0/8"])
        sock, resp = self.tunnel_echo(pp_v1(("127.0.0.42", 1)))
        body = self.assert_error(resp, 403, "http_request_denied", "untrusted_proxy")
        self.assertIn("untrusted_proxy", body)
        self.assertEqual(metric(self.admin_port, "s3gate_denied_total", reason="untrusted_proxy"), 1)

    def test_trusted_peer_is_believed(self):
        self.start_pp(trusted_proxies=["10.0.0.0/8", "127.0.0.1"])
        sock, resp = self.tunnel_echo(pp_v1(("127.0.0.45", 4545)))
        self.assertEqual(resp.status, 200, repr(resp))
        sock.close()
        self.assert_log(self.proxy.log_for_client("127.0.0.45:4545"), decision="allow")

    def test_second_header_is_http_not_believed(self):
        self.start_pp()
        first = pp_v1(("127.0.0.46", 4646))
        second = pp_v1(("127.0.0.99", 9999))
        for inner in (second, pp_v2(("127.0.0.99", 9999))):
            with self.subTest(inner=inner[:6]):
                resp, _ = h.send_raw(self.proxy.port, first + inner + get_ping())
                self.assertIsNotNone(resp)
                self.assert_error(resp, 400, "http_request_error", "bad_request")
        h.wait_until(lambda: len([r for r in self.proxy.access_lines()
                                  if r.get("client") == "127.0.0.46:4646"]) == 2, 5,
                     message=f"two lines for 127.0.0.46:4646 in {self.proxy.stdout_text()}")
        self.assertFalse(any(r.get("client", "").startswith("127.0.0.99") for r in
                             self.proxy.access_lines()))

    def test_listener_without_proxy_protocol_treats_header_as_http(self):
        self.start_gate()
        resp, _ = h.send_raw(self.proxy.port, pp_v1(("10.1.2.3", 1)) + get_ping())
        self.assert_error(resp, 400, "http_request_error", "bad_request")


# ---------------------------------------------------------------------------
# 2. reload on SIGHUP


class ReloadTest(GateTestCase):
    def test_new_sessions_get_new_config_and_open_tunnel_survives(self):
        ns = self.notify_socket()
        gate = self.start_gate(env=ns.env())
        ns.wait_for("READY=1")
        old, resp = h.proxy_connect(gate.port, self.target(self.echo.port))
        self.addCleanup(old.close)
        self.assertEqual(resp.status, 200)
        self.assertEqual(h.echo_roundtrip(old, b"before"), b"before")

        cfg = dict(gate.config)
        cfg["buckets"] = [{"name": "other"}]
        gate.write_config(cfg)
        gate.signal(signal.SIGHUP)
        ns.wait_for("READY=1", count=2)
        self.assertIn("configuration reloaded", gate.stderr())
        lines = ns.lines()
        self.assertEqual([l for l in lines if l in ("READY=1", "RELOADING=1")],
                         ["READY=1", "RELOADING=1", "READY=1"], lines)

        sock, resp = h.proxy_connect(gate.port, self.target(self.echo.port, "media"))
        sock.close()
        self.assert_error(resp, 403, "http_request_denied", "bucket_not_allowed")
        sock, resp = h.proxy_connect(gate.port, self.target(self.echo.port, "other"))
        self.addCleanup(sock.close)
        self.assertEqual(resp.status, 200)
        self.assertEqual(h.echo_roundtrip(sock, b"new"), b"new")
        sock.close()
        # The tunnel opened before the reload keeps flowing under its old snapshot.
        self.assertEqual(h.echo_roundtrip(old, b"after"), b"after")
        old.close()
        self.assertEqual(metric(self.admin_port, "s3gate_config_reloads_total", result="success"), 1)
        self.assertEqual(metric(self.admin_port, "s3gate_config_last_reload_successful"), 1)
        rec = gate.wait_for_log(lambda r: r.get("bucket") == "media" and r.get("status") == 200)
        self.assert_log(rec, decision="allow", bytes_up=11, bytes_down=11)
        self.assert_settled()

    def test_invalid_file_changes_nothing(self):
        gate = self.start_gate()
        good = dict(gate.config)
        with open(gate.config_path, "w") as f:
            f.write(h.to_yaml(good) + "bogus_key: 1\n")
        gate.signal(signal.SIGHUP)
        h.wait_until(lambda: "reload rejected" in gate.stderr(), 5, message="reload rejected")
        self.assertIn("bogus_key", gate.stderr())
        self.assertEqual(metric(self.admin_port, "s3gate_config_reloads_total", result="failure"), 1)
        self.assertEqual(metric(self.admin_port, "s3gate_config_reloads_total", result="success"), 0)
        self.assertEqual(metric(self.admin_port, "s3gate_config_last_reload_successful"), 0)
        sock, resp = h.proxy_connect(gate.port, self.target(self.echo.port))
        self.assertEqual(resp.status, 200, "the running configuration stays")
        sock.close()
        # Not YAML at all: rejected the same way (a TLS certificate that cannot be
        # read is in test_tls_listeners).
        with open(gate.config_path, "w") as f:
            f.write("version: 1\nbuckets: [\n")
        gate.signal(signal.SIGHUP)
        h.wait_until(lambda: metric(self.admin_port, "s3gate_config_reloads_total",
                                    result="failure") == 2, 5, message="second failure counted")
        resp = h.http_get(gate.port, "/ping")
        self.assertEqual((resp.status, resp.body), (200, b"OK"), "still plain HTTP")
        # A good file again: success, and the gauge goes back to 1.
        gate.write_config(good)
        gate.signal(signal.SIGHUP)
        h.wait_until(lambda: metric(self.admin_port, "s3gate_config_last_reload_successful") == 1,
                     5, message="last_reload_successful back to 1")
        self.assertTrue(gate.alive())

    def test_restart_keys_are_warned_and_keep_running_values(self):
        gate = self.start_gate()
        cfg = dict(gate.config)
        new_port, new_admin = h.free_port(), h.free_port()
        cfg["listeners"] = [{"address": f"{h.LOOPBACK}:{new_port}"}]
        cfg["admin"] = {"address": f"{h.LOOPBACK}:{new_admin}"}
        cfg["workers"] = 3
        cfg["buckets"] = [{"name": "other"}]
        gate.write_config(cfg)
        gate.signal(signal.SIGHUP)
        h.wait_until(lambda: "configuration reloaded" in gate.stderr(), 5, message="reload")
        err = gate.stderr()
        for key in ("listeners changed", "admin changed", "workers changed"):
            self.assertIn(key, err)
        self.assertEqual(metric(self.admin_port, "s3gate_config_reloads_total", result="success"), 1)
        self.assertTrue(connect_refused(new_port), "the new listener address must not be bound")
        self.assertTrue(connect_refused(new_admin), "the new admin address must not be bound")
        # The rest of the file did apply.
        sock, resp = h.proxy_connect(gate.port, self.target(self.echo.port, "other"))
        self.assertEqual(resp.status, 200)
        sock.close()
        threads = len(os.listdir(f"/proc/{gate.pid}/task"))
        gate.signal(signal.SIGHUP)  # once more: the same warnings, nothing else changes
        h.wait_until(lambda: metric(self.admin_port, "s3gate_config_reloads_total",
                                    result="success") == 2, 5, message="second reload")
        self.assertEqual(len(os.listdir(f"/proc/{gate.pid}/task")), threads)


# ---------------------------------------------------------------------------
# 3. drain on SIGTERM / SIGINT


class DrainTest(GateTestCase):
    def test_drain_sequence(self):
        ns = self.notify_socket()
        gate = self.start_gate({"limits": {"shutdown_delay": "1500ms", "drain_timeout": "20s"}},
                               env=ns.env())
        ns.wait_for("READY=1")
        tunnel, resp = h.proxy_connect(gate.port, self.target(self.echo.port))
        self.addCleanup(tunnel.close)
        self.assertEqual(resp.status, 200)
        tunnel_name = h.client_name(tunnel)
        idle = h.open_client(gate.port)
        self.addCleanup(idle.close)
        self.assertEqual(h.echo_roundtrip(tunnel, b"x"), b"x")  # the idle one is accepted by now

        t0 = time.monotonic()
        gate.signal(signal.SIGTERM)
        ns.wait_for("STOPPING=1", timeout=2)
        status, body = admin_get(self.admin_port, "/ping")
        self.assertEqual(status, 503, body)
        self.assertEqual(metric(self.admin_port, "s3gate_draining"), 1)
        resp = h.http_get(gate.port, "/ping")
        self.assertEqual(resp.status, 503, repr(resp))
        self.assertLess(time.monotonic() - t0, 1.0, "503s came too late to test the delay")
        # Still accepting and serving during shutdown_delay.
        sock, resp = h.proxy_connect(gate.port, self.target(self.echo.port))
        self.assertEqual(resp.status, 200, "a new connection during shutdown_delay is served")
        self.assertEqual(h.echo_roundtrip(sock, b"during delay"), b"during delay")
        sock.close()
        idle.settimeout(0)
        with self.assertRaises(BlockingIOError, msg="idle connection closed before the delay ended"):
            idle.recv(1)

        # Then the listeners close: refused, and the idle connection is closed at once.
        h.wait_until(lambda: connect_refused(gate.port), 5, interval=0.05,
                     message="listeners to close")
        closed_at = time.monotonic() - t0
        self.assertGreaterEqual(closed_at, 1.4, "listeners closed before shutdown_delay")
        self.assertLess(closed_at, 3.0)
        data, how = h.recv_until_eof(idle, timeout=2)
        self.assertEqual((data, how), (b"", "eof"), "the idle connection should be closed")

        # The open tunnel keeps flowing through the drain, then completes.
        for i in range(5):
            payload = f"drain {i}".encode() * 1000
            self.assertEqual(h.echo_roundtrip(tunnel, payload), payload)
            time.sleep(0.1)
        self.assertTrue(gate.alive(), "exited with a tunnel open")
        tunnel.shutdown(socket.SHUT_WR)
        self.assertEqual(h.recv_until_eof(tunnel, 5), (b"", "eof"))
        tunnel.close()
        code = gate.wait_exit(5)
        self.assertEqual(code, 0)
        self.assertLess(time.monotonic() - t0, 10, "did not exit once the work was done")
        rec = gate.log_for_client(tunnel_name)
        self.assert_log(rec, decision="allow", status=200, close="client_eof",
                        bytes_up=1 + 5 * 7000, bytes_down=1 + 5 * 7000)
        self.assertIn("STOPPING=1", ns.lines())

    def test_drain_timeout_ends_open_tunnels(self):
        gate = self.start_gate({"limits": {"shutdown_delay": "0s", "drain_timeout": "1s"}})
        tunnel, resp = h.proxy_connect(gate.port, self.target(self.echo.port))
        self.addCleanup(tunnel.close)
        self.assertEqual(resp.status, 200)
        t0 = time.monotonic()
        gate.signal(signal.SIGINT)
        self.assertEqual(h.echo_roundtrip(tunnel, b"still"), b"still")
        code = gate.wait_exit(6)
        elapsed = time.monotonic() - t0
        self.assertEqual(code, 0)
        self.assertGreaterEqual(elapsed, 0.9, "exited before drain_timeout with a tunnel open")
        self.assertLess(elapsed, 4.0)
        data, how = h.recv_until_eof(tunnel, 2)
        self.assertIn(how, ("eof", "reset"))
        self.assertIn("drain_timeout reached", gate.stderr())

    def test_second_sigterm_exits_at_once(self):
        gate = self.start_gate({"limits": {"shutdown_delay": "10s", "drain_timeout": "10s"}})
        tunnel, resp = h.proxy_connect(gate.port, self.target(self.echo.port))
        self.addCleanup(tunnel.close)
        self.assertEqual(resp.status, 200)
        gate.signal(signal.SIGTERM)
        h.wait_until(lambda: admin_get(self.admin_port, "/ping")[0] == 503, 3, message="503")
        t0 = time.monotonic()
        gate.signal(signal.SIGTERM)
        self.assertEqual(gate.wait_exit(2), 0)
        self.assertLess(time.monotonic() - t0, 1.5)

    def test_sigint_drains_like_sigterm(self):
        gate = self.start_gate({"limits": {"shutdown_delay": "300ms"}})
        gate.signal(signal.SIGINT)
        h.wait_until(lambda: admin_get(self.admin_port, "/ping")[0] == 503, 2, message="503")
        self.assertEqual(gate.wait_exit(5), 0)

    def test_request_arriving_during_drain_gets_503_draining(self):
        gate = self.start_gate({"limits": {"shutdown_delay": "0s", "drain_timeout": "5s"}})
        sock = h.open_client(gate.port)
        self.addCleanup(sock.close)
        request = h.connect_request(self.target(self.echo.port))
        sock.sendall(request[:10])  # not idle: part of a head has arrived
        time.sleep(0.2)
        gate.signal(signal.SIGTERM)
        h.wait_until(lambda: connect_refused(gate.port), 3, message="listeners to close")
        sock.sendall(request[10:])
        resp = h.read_head(sock, 5)
        if resp is not None and resp.status != 200:
            resp.body = resp.rest + h.recv_until_eof(sock, 5)[0]
        self.assert_error(resp, 503, "connection_limit_reached", "draining")


# ---------------------------------------------------------------------------
# 6. systemd notify and the watchdog


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
WALL = 0x40000000


class FrozenThread:
    """Stops one thread of another process, and only that one: PTRACE_SEIZE and
    PTRACE_INTERRUPT put the traced thread alone in a ptrace-stop (unlike
    SIGSTOP, which stops the whole thread group). Detach from the same Python
    thread that attached (ptrace belongs to the tracing thread)."""

    def __init__(self, tid):
        self.tid = tid
        self.attached = False

    def freeze(self):
        if _libc.ptrace(PTRACE_SEIZE, self.tid, None, None) != 0:
            raise OSError(ctypes.get_errno(), f"PTRACE_SEIZE {self.tid}: "
                          f"{os.strerror(ctypes.get_errno())}")
        self.attached = True
        if _libc.ptrace(PTRACE_INTERRUPT, self.tid, None, None) != 0:
            raise OSError(ctypes.get_errno(), "PTRACE_INTERRUPT")
        pid, _ = os.waitpid(self.tid, WALL)
        assert pid == self.tid

    def thaw(self):
        if self.attached:
            _libc.ptrace(PTRACE_DETACH, self.tid, None, None)
            self.attached = False


def loop_threads(pid):
    """Threads of `pid` blocked in epoll_wait (wchan), i.e. idle event loops."""
    out = []
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                if "epoll" in f.read():
                    out.append(tid)
    return out


def thread_state(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


class NotifyTest(GateTestCase):
    def test_ready_once_listening_and_stopping(self):
        ns = self.notify_socket()
        gate = self.start_gate(env=ns.env())
        ns.wait_for("READY=1")
        resp = h.http_get(gate.port, "/ping")
        self.assertEqual(resp.status, 200)
        self.assertEqual(ns.lines().count("READY=1"), 1)
        self.assertNotIn("WATCHDOG=1", ns.lines(), "no WATCHDOG_USEC: no pings")
        gate.signal(signal.SIGTERM)
        self.assertEqual(gate.wait_exit(5), 0)
        ns.wait_for("STOPPING=1", timeout=2)
        lines = ns.lines()
        self.assertLess(lines.index("READY=1"), lines.index("STOPPING=1"))

    def test_watchdog_pings_periodically(self):
        ns = self.notify_socket()
        self.start_gate(env=ns.env(watchdog_usec=400000))
        ns.wait_for("READY=1")
        time.sleep(2.0)
        pings = ns.times("WATCHDOG=1")
        self.assertGreaterEqual(len(pings), 6, f"{len(pings)} pings in ~2 s at a 200 ms period")
        self.assertLessEqual(len(pings), 16, "pinging far more often than WATCHDOG_USEC/2")
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        self.assertLess(max(gaps), 0.4, f"a gap of {max(gaps):.3f} s >= WATCHDOG_USEC: {gaps}")

    def test_threads_are_named(self):
        # What top -H, ps -L and /proc/PID/task/*/comm show an operator.
        gate = self.start_gate({"workers": 2})
        names = set()
        for tid in os.listdir(f"/proc/{gate.pid}/task"):
            with contextlib.suppress(OSError):
                with open(f"/proc/{gate.pid}/task/{tid}/comm") as f:
                    names.add(f.read().strip())
        self.assertLessEqual({"s3gate-w0", "s3gate-w1", "s3gate-log"}, names, names)

    def test_watchdog_stops_when_a_worker_loop_is_stuck(self):
        if os.geteuid() != 0 and not os.path.exists("/proc/sys/kernel/yama/ptrace_scope"):
            self.skipTest("cannot ptrace another process here")
        ns = self.notify_socket()
        gate = self.start_gate({"workers": 1}, env=ns.env(watchdog_usec=400000))
        ns.wait_for("WATCHDOG=1", count=3)
        # The worker loop is the thread besides main that sits in epoll_wait (the
        # access log's writer waits on a futex; sanitizer threads elsewhere).
        tids = [t for t in loop_threads(gate.pid) if t != gate.pid]
        if len(tids) != 1:
            self.skipTest(f"expected one event-loop thread besides main, found {tids}")
        frozen = FrozenThread(tids[0])
        try:
            try:
                frozen.freeze()
            except OSError as exc:
                self.skipTest(f"ptrace not permitted ({exc}); cannot freeze one loop honestly")
            self.assertIn(thread_state(gate.pid, gate.pid), ("S", "R"), "main thread must run")
            stuck_at = time.monotonic()
            time.sleep(1.5)
            during = [t for t in ns.times("WATCHDOG=1") if t > stuck_at + 0.45]
            self.assertEqual(during, [], "pings went on while a worker loop was stuck")
            self.assertIn("has not turned", gate.stderr())
            status, _ = admin_get(self.admin_port, "/ping", timeout=2)
            self.assertEqual(status, 200, "the control loop itself is alive")
        finally:
            frozen.thaw()
        thawed_at = time.monotonic()
        h.wait_until(lambda: any(t > thawed_at for t in ns.times("WATCHDOG=1")), 2,
                     message="pings to resume once the loop turns again")
