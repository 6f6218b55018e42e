"""A fleet behind a load balancer survives a rolling restart.

HAProxy (Debian's package, run as our own child with our own configuration,
bound to 127.0.0.1) plays the NLB: TCP mode, PROXY protocol v2 to three s3gate
instances, HTTP health checks on /ping sent with the PROXY header, round-robin.
While 50 clients keep long paced transfers going through CONNECT (uploads to a
sink, downloads from a source, each checked byte for byte by sha256) and
another client keeps opening short tunnels, every instance in turn is reloaded
(SIGHUP), stopped (SIGTERM: /ping 503, HAProxy marks it down within
shutdown_delay, then the drain) and started again on the same port. Every
transfer completes, the short-tunnel client sees no failure, and the access
logs name the clients as HAProxy saw them (via = HAProxy's own address).

Sizes: S3GATE_FLEET_MIB (per transfer, default 16, 4 under ASan) at
S3GATE_FLEET_MIBPS per stream (default 3, 1 under ASan)."""

import contextlib
import csv
import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

import harness as h
from test_nlb import GateProcess, GateTestCase, metric

CLIENTS = 50
INSTANCES = 3
SHUTDOWN_DELAY = 2.0  # seconds; HAProxy checks every 0.5 s and marks down on one failure


def sanitized_binary():
    """True when the binary under test carries AddressSanitizer (slower, more memory)."""
    binary = h.s3gate_binary()
    if binary is None:
        return False
    with open(binary, "rb") as f:
        for _ in range(4096):  # at most 4 GiB, in 1 MiB reads
            block = f.read(1 << 20)
            if not block:
                return False
            if b"__asan_init" in block or b"AddressSanitizer" in block:
                return True
    return False


class Haproxy:
    """haproxy -db with a generated configuration, stopped by its PID. The stats
    socket answers `show stat` so the test can see what the balancer thinks."""

    def __init__(self, workdir, frontend_port, servers):
        self.workdir = workdir
        self.frontend_port = frontend_port
        self.config_path = os.path.join(workdir, "haproxy.cfg")
        self.log_path = os.path.join(workdir, "haproxy.log")
        self.stats_path = os.path.join(workdir, "haproxy.sock")
        lines = [
            "global",
            "    maxconn 4096",
            f"    stats socket {self.stats_path} mode 600 level admin",
            "defaults",
            "    mode tcp",
            "    timeout connect 2s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    timeout check 1s",
            "    retries 3",
            "    option redispatch 1",
            "frontend nlb",
            f"    bind 127.0.0.1:{frontend_port}",
            "    default_backend fleet",
            "backend fleet",
            "    balance roundrobin",
            "    option httpchk",
            "    http-check send meth GET uri /ping ver HTTP/1.1 hdr Host s3gate hdr Connection close",
            "    http-check expect status 200",
            "    default-server inter 500ms fastinter 250ms downinter 250ms fall 1 rise 2 "
            "send-proxy-v2 check-send-proxy",
        ]
        for name, port in servers:
            lines.append(f"    server {name} 127.0.0.1:{port} check")
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        check = subprocess.run(["haproxy", "-c", "-f", self.config_path], capture_output=True,
                               text=True, timeout=20)
        if check.returncode != 0:
            raise AssertionError(f"haproxy -c rejects our configuration:\n{check.stdout}{check.stderr}")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["haproxy", "-f", self.config_path, "-db"], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=h.clean_env())

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-4000:]

    def stat(self):
        """{server name: status} ("UP", "DOWN", "UP 1/2", ...) from `show stat`."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(self.stats_path)
            s.sendall(b"show stat\n")
            data, _ = h.recv_until_eof(s, 2)
        text = data.decode().lstrip("# ")
        out = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") == "fleet" and row.get("svname") not in ("BACKEND", "FRONTEND"):
                out[row["svname"]] = row.get("status", "")
        return out

    def wait_status(self, server, status, timeout):
        def seen():
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                return self.stat().get(server) == status
            return False

        return h.wait_until(seen, timeout, interval=0.05,
                            message=f"haproxy to see {server} {status}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


class Transfers:
    """CLIENTS threads, each doing paced transfers back to back through the
    balancer until stopped (at least one each). Every transfer is recorded:
    direction, local address, bytes, whether the sha256 matched, any error."""

    def __init__(self, port, sink_target, source_target, size, rate):
        self.port = port
        self.targets = (sink_target, source_target)
        self.size = size
        self.rate = rate  # bytes per second per stream
        self.digest = h.pattern_sha256(size)
        self.results = []
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True, name=f"xfer-{i}")
                        for i in range(CLIENTS)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        return [t.name for t in self.threads if t.is_alive()]

    def _run(self, index):
        # Staggered starts, so that transfers end at different times and every
        # drain finds some in flight.
        time.sleep(index * 0.05)
        for n in range(1000):  # bounded; ends when stopped
            if n > 0 and self.stop.is_set():
                return
            upload = (index + n) % 2 == 0
            record = {"upload": upload, "client": None, "ok": False, "error": None,
                      "bytes": 0, "started": time.monotonic()}
            try:
                if upload:
                    self._upload(record)
                else:
                    self._download(record)
            except Exception as exc:  # recorded and asserted on by the test
                record["error"] = repr(exc)
            record["ended"] = time.monotonic()
            with self._lock:
                self.results.append(record)

    def _pace(self, start, done):
        ahead = done / self.rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)

    def _upload(self, record):
        sock, resp = h.proxy_connect(self.port, self.targets[0], timeout=30)
        with sock:
            record["client"] = h.client_name(sock)
            if resp.status != 200:
                raise AssertionError(f"CONNECT answered {resp!r}")
            start = time.monotonic()
            step = 256 << 10
            for block in h.pattern_chunks(self.size):  # 1 MiB blocks of the pattern
                for i in range(0, len(block), step):
                    sock.sendall(block[i:i + step])
                    record["bytes"] += len(block[i:i + step])
                    self._pace(start, record["bytes"])
            sock.shutdown(socket.SHUT_WR)
            reply, how = h.recv_until_eof(sock, 30)
            record["ok"] = reply == f"{self.digest} {self.size}\n".encode()
            if not record["ok"]:
                record["error"] = f"sink answered {reply!r} ({how})"

    def _download(self, record):
        sock, resp = h.proxy_connect(self.port, self.targets[1], timeout=30)
        with sock:
            record["client"] = h.client_name(sock)
            if resp.status != 200:
                raise AssertionError(f"CONNECT answered {resp!r}")
            digest = hashlib.sha256(resp.rest)
            record["bytes"] = len(resp.rest)
            start = time.monotonic()
            sock.settimeout(30)
            for _ in range(self.size + 1):  # at least one byte per pass
                data = sock.recv(256 << 10)
                if not data:
                    break
                digest.update(data)
                record["bytes"] += len(data)
                self._pace(start, record["bytes"])
            record["ok"] = record["bytes"] == self.size and digest.hexdigest() == self.digest
            if not record["ok"]:
                record["error"] = f"{record['bytes']} bytes, sha256 {digest.hexdigest()}"


class ShortTunnels:
    """One client opening short tunnels (CONNECT, an echo round trip, close) as
    fast as it can, counting failures."""

    def __init__(self, port, target):
        self.port = port
        self.target = target
        self.ok = 0
        self.failures = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="short-tunnels")

    def _run(self):
        for i in range(100000):  # bounded; ends when stopped
            if self.stop.is_set():
                return
            try:
                sock, resp = h.proxy_connect(self.port, self.target, timeout=10)
                with sock:
                    if resp.status != 200:
                        raise AssertionError(f"CONNECT answered {resp!r}")
                    payload = f"short {i}".encode()
                    got = h.echo_roundtrip(sock, payload, timeout=10)
                    if got != payload:
                        raise AssertionError(f"echo gave {got!r}")
                self.ok += 1
            except Exception as exc:  # recorded and asserted on by the test
                self.failures.append((time.monotonic(), repr(exc)))
            time.sleep(0.01)


@unittest.skipIf(shutil.which("haproxy") is None, "haproxy not installed (apt-get install -y haproxy)")
class FleetTest(GateTestCase):
    def instance_config(self, port=None):
        cfg = self.config({
            "workers": 2,
            "trusted_proxies": ["127.0.0.1/32"],
            "limits": {"shutdown_delay": f"{int(SHUTDOWN_DELAY * 1000)}ms", "drain_timeout": "30s",
                       "idle_timeout": "30s", "header_timeout": "5s"},
        })
        cfg["ports"] = sorted(set(cfg["ports"]) | {self.big_source.port})
        cfg["listeners"] = [{"address": f"{h.LOOPBACK}:{port or self.proxy_port}",
                             "proxy_protocol": True}]
        return cfg

    def launch(self, name, cfg):
        gate = GateProcess(cfg, self.workdir, name=name)
        self.addCleanup(self._stop_proxy, gate)
        gate.start()
        return gate

    def test_rolling_restart_under_load(self):
        asan = sanitized_binary()
        size = int(float(os.environ.get("S3GATE_FLEET_MIB", 4 if asan else 16)) * (1 << 20))
        rate = float(os.environ.get("S3GATE_FLEET_MIBPS", 1 if asan else 3)) * (1 << 20)
        self.big_source = h.SourceServer(size)
        self.addCleanup(self.big_source.stop)

        gates = []
        for i in range(INSTANCES):
            cfg = self.instance_config()
            gates.append(self.launch(f"s{i + 1}", cfg))
        lb_port = h.free_port()
        lb = Haproxy(self.workdir, lb_port, [(f"s{i + 1}", g.port) for i, g in enumerate(gates)])
        self.addCleanup(lb.stop)
        for i in range(INSTANCES):
            lb.wait_status(f"s{i + 1}", "UP", 10)

        transfers = Transfers(lb_port, f"{h.s3_name('media')}:{self.sink.port}",
                              f"{h.s3_name('media')}:{self.big_source.port}", size, rate)
        prober = ShortTunnels(lb_port, f"{h.s3_name('media')}:{self.echo.port}")
        transfers.start()
        prober.thread.start()
        self.addCleanup(prober.stop.set)
        self.addCleanup(transfers.stop.set)
        time.sleep(1.5)

        all_gates = list(gates)
        roll_log = []
        for i in range(INSTANCES):
            name, gate = f"s{i + 1}", gates[i]
            # Reload: a harmless change (one more bucket rule) that must count as a success.
            cfg = dict(gate.config)
            cfg["buckets"] = list(cfg["buckets"]) + [{"name": f"rolled-{i}"}]
            gate.write_config(cfg)
            gate.signal(signal.SIGHUP)
            h.wait_until(lambda: metric(gate.admin_port, "s3gate_config_reloads_total",
                                        result="success") == 1, 5, message=f"{name} reload")
            tunnels = metric(gate.admin_port, "s3gate_tunnels_active")
            t_term = time.monotonic()
            gate.signal(signal.SIGTERM)
            lb.wait_status(name, "DOWN", SHUTDOWN_DELAY)
            marked_down = time.monotonic() - t_term
            code = gate.wait_exit(35)
            exited = time.monotonic() - t_term
            self.assertEqual(code, 0, f"{name} exit status; stderr:\n{gate.stderr()[-3000:]}")
            self.assertIn("draining: listeners closed", gate.stderr())
            # Restart on the same port, with the reloaded file.
            fresh = self.launch(f"{name}-restarted", cfg)
            all_gates.append(fresh)
            lb.wait_status(name, "UP", 10)
            roll_log.append(f"{name}: {tunnels:.0f} tunnels at SIGTERM, down after {marked_down:.2f}s, "
                            f"exited after {exited:.1f}s, back up after {time.monotonic() - t_term:.1f}s")
            self.assertGreater(tunnels, 0, f"{name} had no tunnel to drain: {roll_log}")

        transfers.stop.set()
        prober.stop.set()
        stuck = transfers.join(60)
        prober.thread.join(15)
        self.assertEqual(stuck, [], "transfer threads still running")
        results = transfers.results
        failed = [r for r in results if not r["ok"]]
        summary = (f"{len(results)} transfers of {size >> 20} MiB, {len(failed)} failed; "
                   f"{prober.ok} short tunnels, {len(prober.failures)} failed; roll: {roll_log}")
        print("\n" + summary)
        self.assertEqual(failed, [], summary)
        self.assertGreaterEqual(len(results), CLIENTS)
        self.assertEqual(prober.failures, [], summary)
        self.assertGreater(prober.ok, 50, summary)

        # Each transfer's log line, in whichever instance carried it: the client
        # is the address HAProxy saw (ours), via is HAProxy's side of its own
        # connection.
        # Ephemeral ports get reused over a run, so a line is matched on the
        # client, the upstream port and the byte count together.
        def line_for(r):
            port = self.sink.port if r["upload"] else self.big_source.port
            field = "bytes_up" if r["upload"] else "bytes_down"
            for g in all_gates:
                for rec in g.access_lines():
                    if (rec.get("client"), rec.get("port"), rec.get(field)) == (r["client"], port, size):
                        return rec
            return None

        for r in results:
            rec = h.wait_until(lambda: line_for(r), 5,
                               message=f"a log line for {r['client']} with {size} bytes")
            self.assertEqual(rec["decision"], "allow", rec)
            self.assertEqual(rec["status"], 200, rec)
            via = rec.get("via", "")
            self.assertTrue(via.startswith("127.0.0.1:") and via != r["client"], rec)
        carriers = {g.stdout_path for g in all_gates
                    for rec in g.access_lines() if rec.get("kind") == "connect"}
        self.assertGreaterEqual(len(carriers), INSTANCES + 1, "round-robin spread the load")
        # HAProxy's checks reached /ping through the PROXY listener.
        pings = [rec for g in all_gates for rec in g.access_lines() if rec.get("kind") == "local"]
        self.assertTrue(pings, "no health check in any access log")
        self.assertTrue(all("via" in rec for rec in pings))
        self.assertTrue(any(rec["status"] == 503 for rec in pings), "no check saw a draining 503")
