#!/usr/bin/env python3
"""s3gate benchmarks, side by side with Squid and tinyproxy, in one run.

    python3 test/bench/run.py [--quick] [--build-dir DIR] [--rounds N]
                              [--only WORKLOAD,...] [--proxies NAME,...] [--syscalls]

See test/bench/README.md for what each number means. This script installs
squid and tinyproxy from Debian's packages when they are missing and it runs
as root (--no-install: never); a peer still missing is skipped with the reason printed.
Every process it starts is its own child on loopback, with its own
configuration in a temporary directory, stopped by its PID. Every load loop is
bounded in count and in time. Results: a table on standard output and
test/bench/results/last.json.
"""

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

ORIGIN_IP = "127.0.77.80"  # the upstream: tunnel port and the plain-HTTP origin on port 80 (--origin-ip)
S3_NAME = "bench.s3.us-east-1.amazonaws.com"  # bucket "bench", pinned/resolved to ORIGIN_IP
INSPECT_NAME = "ins.s3.us-east-1.amazonaws.com"  # bucket "ins": the only name the inspection certificate covers
PROXY_TLS_NAME = "proxy.bench"  # the name on the HTTPS proxy listeners' certificate
TLS_PORT = 443  # the TLS origin (s3gate sends upstream TLS to port 443 only)
CLK_TCK = os.sysconf("SC_CLK_TCK")
AUTH_USER = "bench"  # the authentication rows' user name (and the prefix of the uncached row's)
AUTH_USERS = 1000  # names of the uncached row: no more CONNECTs than this in one run of it
AUTH_BCRYPT_COST = 10
GIB = 1 << 30
MIB = 1 << 20


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# processes


_handed_out_ports = set()


def free_port(ip="127.0.0.1"):
    """A port free a moment ago, never one this run already handed out (the kernel
    may give one port to two binds in a row)."""
    for _ in range(64):
        with socket.socket() as s:
            s.bind((ip, 0))
            port = s.getsockname()[1]
        if port not in _handed_out_ports:
            _handed_out_ports.add(port)
            return port
    raise RuntimeError("no fresh free port after 64 tries")


def raise_nofile():
    """preexec_fn: the soft descriptor limit up to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def nofile_hard():
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def wait_port(ip, port, proc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            with socket.create_connection((ip, port), timeout=0.5):
                return True
        time.sleep(0.05)
    return False


def stop_pid(proc, timeout=10.0):
    """SIGTERM to our own child by PID, SIGKILL after `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    """pid and all its descendants."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def proc_cpu(pid):
    """utime+stime (+ reaped children's) of one process, all its threads, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return 0.0
    fields = st[st.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime=14, stime=15, cutime=16, cstime=17
    return sum(int(fields[i - 3]) for i in (14, 15, 16, 17)) / CLK_TCK


def tree_cpu(pid):
    return sum(proc_cpu(p) for p in tree(pid))


def thread_cpu(pid):
    """CPU seconds of each thread of `pid`, summed by thread name (comm)."""
    out = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    st = f.read()
                name = st[st.index("(") + 1:st.rindex(")")]
                fields = st[st.rindex(")") + 2:].split()
                out[name] = out.get(name, 0.0) + (int(fields[14 - 3]) + int(fields[15 - 3])) / CLK_TCK
    return out


def tree_rss_kib(pid):
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
    return total


def machine_busy():
    """Seconds of CPU time the whole machine spent in processes (all CPUs): user, nice,
    system and steal. Softirq time is left out: loopback TCP processing is charged
    there rather than to the process that caused it."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[7]) / CLK_TCK


def pin_tree(pid, cpus):
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cpus)


# ---------------------------------------------------------------------------
# TLS material and the cipher's floor


class Certs:
    """A test CA made with openssl in the run's directory, and the certificates
    it issues (RSA 2048, as `openssl req -newkey rsa:2048` makes by default):
    the TLS origin's (both S3 names), the HTTPS proxy listeners' and s3gate's
    inspection certificate (INSPECT_NAME only: every other name is uncovered
    and, with `inspect_uncovered: blind`, relayed blindly)."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "tls")
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.ca = self._path("ca.pem")
        self._run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self._path("ca.key"),
                  "-out", self.ca, "-days", "2", "-subj", "/CN=s3gate bench CA")
        self.origin = self._issue("origin", [S3_NAME, INSPECT_NAME])
        self.proxy = self._issue("proxy", [PROXY_TLS_NAME])
        self.inspect = self._issue("inspect", [INSPECT_NAME])

    def _path(self, name):
        return os.path.join(self.dir, name)

    def _run(self, *argv):
        subprocess.run(["openssl"] + list(argv), check=True, capture_output=True, timeout=60)

    def _issue(self, name, dns):
        key, csr, pem, ext = (self._path(f"{name}.{x}") for x in ("key", "csr", "pem", "ext"))
        with open(ext, "w") as f:
            f.write("subjectAltName=" + ",".join(f"DNS:{d}" for d in dns) + "\n")
        self._run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={dns[0]}")
        self._run("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self._path("ca.key"), "-CAcreateserial",
                  "-out", pem, "-days", "2", "-extfile", ext)
        os.chmod(key, 0o644)  # read by the proxies' own users
        return pem, key


def cipher_floor(seconds=2):
    """`openssl speed -evp aes-128-gcm` on 16 KiB blocks (a full TLS record), one
    core: MB/s and CPU-seconds per GiB for one pass over the bytes."""
    if not shutil.which("openssl"):
        return None
    r = subprocess.run(["openssl", "speed", "-mr", "-seconds", str(seconds), "-bytes", "16384", "-evp", "aes-128-gcm"],
                       capture_output=True, text=True, timeout=60)
    for line in r.stdout.splitlines():
        # +F:<n>:<name>:<bytes per second for each size>
        if line.startswith("+F:"):
            bps = float(line.split(":")[3])  # -mr reports bytes per second
            return {"mb_per_s": round(bps / 1e6), "cpu_s_per_gib": round(GIB / bps, 3),
                    "command": f"openssl speed -mr -seconds {seconds} -bytes 16384 -evp aes-128-gcm",
                    "version": subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()}
    return None


class NotApplicable(Exception):
    """This proxy cannot do this workload (the table says n/a and why)."""


# ---------------------------------------------------------------------------
# proxy authentication: the users file and the cost of one hash


class AuthUsers:
    """The users file of the authentication rows: user AUTH_USER (the cached row) and
    AUTH_USER0 .. AUTH_USER<AUTH_USERS-1> (the uncached row: a user per CONNECT, so that
    no two checks in flight share a name+password and one verification never answers
    two), all with one bcrypt hash of cost AUTH_BCRYPT_COST ($2b$, as htpasswd -B -C 10
    or mkpasswd -m bcrypt -R 10 make it). Each entry is checked on its own: one line's
    hash for many names costs each check the same hashing. Made with the system's
    libcrypt (as s3gate verifies it), else mkpasswd; the CPU of one verification
    (crypt() against the stored hash, in this process) is measured too."""

    PASSWORD = "bench password 1"

    def __init__(self, workdir):
        self.path = os.path.join(workdir, "users")
        self.kind = f"bcrypt $2b$, cost {AUTH_BCRYPT_COST}"
        self.cpu_ms_per_hash = None
        lib = self._libcrypt()
        if lib is not None:
            setting = lib.crypt_gensalt(b"$2b$", AUTH_BCRYPT_COST, None, 0)
            out = lib.crypt(self.PASSWORD.encode(), setting) if setting else None
            self.hash = out.decode() if out and out.startswith(b"$2b$") else None
            self.made_by = "libcrypt (crypt_gensalt, crypt)"
        else:
            self.hash, self.made_by = None, None
        if self.hash is None and shutil.which("mkpasswd"):
            r = subprocess.run(["mkpasswd", "-m", "bcrypt", "-R", str(AUTH_BCRYPT_COST), "--stdin"],
                               input=self.PASSWORD, capture_output=True, text=True, timeout=60)
            if r.returncode == 0 and r.stdout.startswith("$2b$"):
                self.hash, self.made_by = r.stdout.strip(), "mkpasswd -m bcrypt"
        if self.hash is None:
            raise NotApplicable("nothing here makes a bcrypt hash (libcrypt or mkpasswd)")
        with open(self.path, "w") as f:
            f.write(f"# s3gate bench users: {self.kind}\n{AUTH_USER}:{self.hash}\n")
            for i in range(AUTH_USERS):
                f.write(f"{AUTH_USER}{i}:{self.hash}\n")
        os.chmod(self.path, 0o644)
        if lib is not None:
            n = 5
            t0 = time.process_time()
            for _ in range(n):
                ok = lib.crypt(self.PASSWORD.encode(), self.hash.encode()) == self.hash.encode()
            self.cpu_ms_per_hash = (time.process_time() - t0) * 1000 / n if ok else None

    @staticmethod
    def _libcrypt():
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("crypt")
        if not name:
            return None
        lib = ctypes.CDLL(name)
        lib.crypt_gensalt.restype = ctypes.c_char_p
        lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
        lib.crypt.restype = ctypes.c_char_p
        lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        return lib

    def info(self):
        return {"kind": self.kind, "made_by": self.made_by, "users": AUTH_USERS + 1,
                "cpu_ms_per_hash": None if self.cpu_ms_per_hash is None else round(self.cpu_ms_per_hash, 2)}


# ---------------------------------------------------------------------------
# the upstream server (loadgen serve)


class Upstream:
    def __init__(self, loadgen, workdir, certs):
        self.loadgen = loadgen
        self.certs = certs
        self.tunnel_port = free_port(ORIGIN_IP)
        self.out = open(os.path.join(workdir, "upstream.log"), "wb")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.loadgen, "serve", "--tunnel", f"{ORIGIN_IP}:{self.tunnel_port}", "--http", f"{ORIGIN_IP}:80",
             "--tls", f"{ORIGIN_IP}:{TLS_PORT}", "--cert", self.certs.origin[0], "--key", self.certs.origin[1]],
            stdout=self.out, stderr=self.out, stdin=subprocess.DEVNULL, preexec_fn=raise_nofile)
        if not all(wait_port(ORIGIN_IP, port, self.proc) for port in (self.tunnel_port, 80, TLS_PORT)):
            raise SystemExit(f"the upstream did not start (is {ORIGIN_IP}:80 or :443 taken?); see {self.out.name}")

    def stop(self):
        stop_pid(self.proc)


# ---------------------------------------------------------------------------
# the proxies


class Proxy:
    name = "?"
    label = "?"
    port = None
    proc = None
    note = ""

    def __init__(self, workdir, upstream):
        self.workdir = workdir
        self.upstream = upstream

    @property
    def pid(self):
        return self.proc.pid

    def proxy_arg(self):
        return f"127.0.0.1:{self.port}"

    def connect_target(self):
        return f"{S3_NAME}:{self.upstream.tunnel_port}"

    def available(self):
        return None  # or the reason it is skipped

    def start(self):
        raise NotImplementedError

    def stop(self):
        stop_pid(self.proc)
        self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def _popen(self, argv, wait_for=True):
        out = open(os.path.join(self.workdir, f"{self.name}.out"), "ab")
        self.proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                     preexec_fn=raise_nofile, cwd=self.workdir)
        if wait_for and not wait_port("127.0.0.1", self.port, self.proc):
            raise RuntimeError(f"{self.name} did not start; see {out.name}")


class NoProxy(Proxy):
    name = "none"
    label = "no proxy"

    def proxy_arg(self):
        return "none"

    def start(self):
        pass

    def stop(self):
        pass


class S3gate(Proxy):
    def __init__(self, workdir, upstream, binary, workers, log=True, upstream_tls=False, variant="", auth=None):
        super().__init__(workdir, upstream)
        self.binary = binary
        self.workers = workers
        self.log = log
        self.upstream_tls = upstream_tls
        self.variant = variant  # "b": the --compare binary
        self.auth = auth  # None, or (AuthUsers, cached: bool): `auth` with that users file
        self.name = (f"s3gate-w{workers}" + ("" if log else "-nolog") + (f"-{variant}" if variant else "")
                     + ("-utls" if upstream_tls else "")
                     + ("" if auth is None else ("-auth" if auth[1] else "-auth-nocache")))
        self.label = f"s3gate w{workers}" + ("" if log else " log off") + (f" ({variant}: --compare)" if variant else "")
        self.port = free_port()
        self.tls_port = free_port()
        self.admin_port = free_port()
        self._twins = {}
        self.note = (("access log to a file" if log else "access_log: off") +
                     "; tunnel.verify_sni: true (every tunnel starts with a real ClientHello naming the CONNECT "
                     "host); an HTTPS listener beside the plain one; tunnel.inspect: true with a certificate for "
                     f"{INSPECT_NAME} only (inspect_uncovered: blind: the other tunnels are blind); "
                     "http.upstream_tls: false (a second process with true, otherwise the same, runs the "
                     "upstream-TLS rows; two more with auth.users_file, cache_ttl at its default and 0s, run "
                     "the authentication rows)")

    def twin(self):
        """The same s3gate with `http.upstream_tls: true` (started on first use)."""
        if "utls" not in self._twins:
            t = S3gate(self.workdir, self.upstream, self.binary, self.workers, self.log, True, self.variant)
            t.start()
            self._twins["utls"] = t
        return self._twins["utls"]

    def auth_twin(self, users, cached):
        """The same s3gate with `auth.users_file` (started on first use): `cache_ttl` left at its
        default (5m) when `cached`, else `cache_ttl: 0s` (every check hashed)."""
        key = "auth" if cached else "auth-nocache"
        if key not in self._twins:
            t = S3gate(self.workdir, self.upstream, self.binary, self.workers, self.log, False, self.variant,
                       auth=(users, cached))
            t.start()
            self._twins[key] = t
        return self._twins[key]

    def auth_counts(self):
        """s3gate_auth_total from the admin listener's /metrics, by result."""
        import urllib.request
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an environment's proxy
        with opener.open(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        return {m.group(1): float(m.group(2)) for m in
                re.finditer(r'^s3gate_auth_total\{result="(\w+)"\} (\S+)$', text, re.M)}

    def stop(self):
        super().stop()
        for t in self._twins.values():
            t.stop()
        self._twins = {}

    def version(self):
        with contextlib.suppress(Exception):
            return subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        return "?"

    def available(self):
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            return f"no s3gate binary at {self.binary} (build it, or pass --build-dir)"
        return None

    def start(self):
        certs = self.upstream.certs
        path = os.path.join(self.workdir, f"{self.name}.yaml")
        with open(path, "w") as f:
            f.write(f"""version: 1
listeners:
  - address: "127.0.0.1:{self.port}"
  - address: "127.0.0.1:{self.tls_port}"
    tls:
      certificate: "{certs.proxy[0]}"
      private_key: "{certs.proxy[1]}"
admin:
  address: "127.0.0.1:{self.admin_port}"
workers: {self.workers}
clients: ["127.0.0.0/8"]
dns:
  pins:
    - host: "{S3_NAME}"
      addresses: ["{ORIGIN_IP}"]
    - host: "{INSPECT_NAME}"
      addresses: ["{ORIGIN_IP}"]
s3:
  regions: ["*"]
buckets:
  - name: "bench"
    access: read-write
  - name: "ins"
    access: read-write
ports: [{self.upstream.tunnel_port}, {TLS_PORT}]
http:
  upstream_tls: {"true" if self.upstream_tls else "false"}
  ca_file: "{certs.ca}"
tunnel:
  verify_sni: true
  inspect: true
  inspect_certificate: "{certs.inspect[0]}"
  inspect_private_key: "{certs.inspect[1]}"
  inspect_uncovered: blind
limits:
  max_connections: 100000
  idle_timeout: 600s
access_log: {os.path.join(self.workdir, self.name + "-access.log") if self.log else "off"}
""")
            if self.auth is not None:
                users, cached = self.auth
                f.write(f"""auth:
  users_file: "{users.path}"
  required: true
""" + ("" if cached else "  cache_ttl: 0s\n"))
        self._popen([self.binary, "-c", path])


class Squid(Proxy):
    name = "squid"
    label = "Squid"

    def __init__(self, workdir, upstream):
        super().__init__(workdir, upstream)
        self.binary = shutil.which("squid") or "/usr/sbin/squid"
        self.port = free_port()
        self.tls_port = free_port()
        self.note = ("access_log to a file (daemon:, its default module), an https_port (tls-cert) beside the "
                     "http_port, cache deny all, cache_mem 0, hosts_file for the S3 names, "
                     "max_filedescriptors = the hard limit, one worker (the default)")

    def available(self):
        if not os.path.exists(self.binary):
            return "squid is not installed (apt-get install squid)"
        return None

    def version(self):
        with contextlib.suppress(Exception):
            out = subprocess.run([self.binary, "-v"], capture_output=True, text=True, timeout=10).stdout
            return out.splitlines()[0]
        return "?"

    def start(self):
        d = os.path.join(self.workdir, "squid")
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)  # Squid drops to its own user
        hosts = os.path.join(d, "hosts")
        with open(hosts, "w") as f:
            f.write(f"{ORIGIN_IP} {S3_NAME} {INSPECT_NAME}\n")
        conf = os.path.join(d, "squid.conf")
        certs = self.upstream.certs
        with open(conf, "w") as f:
            f.write(f"""http_port 127.0.0.1:{self.port}
https_port 127.0.0.1:{self.tls_port} tls-cert={certs.proxy[0]} tls-key={certs.proxy[1]}
pid_filename {d}/squid.pid
cache_log {d}/cache.log
access_log daemon:{d}/access.log squid
cache_store_log none
logfile_rotate 0
coredump_dir {d}
cache deny all
cache_mem 0 MB
hosts_file {hosts}
pinger_enable off
max_filedescriptors {nofile_hard()}
shutdown_lifetime 1 seconds
acl bench_ports port {self.upstream.tunnel_port} 80 {TLS_PORT}
acl CONNECT method CONNECT
http_access deny CONNECT !bench_ports
http_access allow localhost
http_access deny all
""")
        self._popen([self.binary, "-N", "-f", conf])


class Tinyproxy(Proxy):
    name = "tinyproxy"
    label = "tinyproxy"

    def __init__(self, workdir, upstream):
        super().__init__(workdir, upstream)
        self.binary = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
        self.port = free_port()
        self.private_hosts = shutil.which("unshare") is not None and os.geteuid() == 0
        self.note = ("LogLevel Error (it fsyncs every log line), MaxClients 20000; "
                     + ("resolves the S3 name through a private /etc/hosts (unshare -m + bind mount)"
                        if self.private_hosts else f"CONNECTs to {ORIGIN_IP} (no private /etc/hosts)"))

    def available(self):
        if not os.path.exists(self.binary):
            return "tinyproxy is not installed (apt-get install tinyproxy)"
        return None

    def connect_target(self):
        if self.private_hosts:
            return super().connect_target()
        return f"{ORIGIN_IP}:{self.upstream.tunnel_port}"

    def version(self):
        with contextlib.suppress(Exception):
            return subprocess.run([self.binary, "-v"], capture_output=True, text=True, timeout=10).stdout.strip()
        return "?"

    def start(self):
        d = os.path.join(self.workdir, "tinyproxy")
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)
        conf = os.path.join(d, "tinyproxy.conf")
        with open(conf, "w") as f:
            f.write(f"""User nobody
Group nogroup
Port {self.port}
Listen 127.0.0.1
Timeout 600
LogFile "{d}/tinyproxy.log"
LogLevel Error
PidFile "{d}/tinyproxy.pid"
MaxClients 20000
Allow 127.0.0.1
ConnectPort {self.upstream.tunnel_port}
ConnectPort {TLS_PORT}
DisableViaHeader Yes
""")
        if self.private_hosts:
            hosts = os.path.join(d, "hosts")
            with open(hosts, "w") as f:
                f.write(f"127.0.0.1 localhost\n{ORIGIN_IP} {S3_NAME} {INSPECT_NAME}\n")
            # A private mount namespace: the bind mount is seen by tinyproxy only.
            # unshare and sh exec, so the PID is tinyproxy's.
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    f'mount --bind "{hosts}" /etc/hosts && exec "{self.binary}" -d -c "{conf}"']
        else:
            argv = [self.binary, "-d", "-c", conf]
        self._popen(argv)


# ---------------------------------------------------------------------------
# workloads


class Runner:
    def __init__(self, args, loadgen, upstream):
        self.args = args
        self.loadgen = loadgen
        self.upstream = upstream
        self.quick = args.quick
        self._auth = None  # AuthUsers, or the NotApplicable why not (made on first use)

    def loadgen_json(self, argv, timeout, cpu_pid=None, pin=False):
        """Runs one loadgen client; returns (its JSON, proxy CPU-seconds, other load in cores)."""
        pre = raise_nofile
        if pin:
            def pre():
                raise_nofile()
                os.sched_setaffinity(0, {0})
        busy0 = machine_busy()
        cpu0 = tree_cpu(cpu_pid) if cpu_pid else 0.0
        threads0 = thread_cpu(cpu_pid) if cpu_pid else {}
        up0 = tree_cpu(self.upstream.proc.pid)
        kids0 = proc_children_cpu_self()
        t0 = time.monotonic()
        p = subprocess.Popen([self.loadgen] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, preexec_fn=pre)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_pid(p)
            raise RuntimeError(f"loadgen {' '.join(argv)} ran past {timeout}s")
        wall = time.monotonic() - t0
        cpu = (tree_cpu(cpu_pid) - cpu0) if cpu_pid else 0.0
        # Everything else the machine did meanwhile: the noise indicator.
        lg = proc_children_cpu_self() - kids0  # the loadgen client, reaped
        other = machine_busy() - busy0 - cpu - (tree_cpu(self.upstream.proc.pid) - up0) - lg
        lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"loadgen {' '.join(argv)} printed nothing; stderr: {err.decode()[-500:]}")
        res = json.loads(lines[-1])
        res["proxy_cpu_s"] = cpu
        if cpu_pid:
            threads1 = thread_cpu(cpu_pid)
            res["threads_cpu_s"] = {k: round(v - threads0.get(k, 0.0), 3) for k, v in threads1.items()}
        res["client_cpu_s"] = lg
        res["server_cpu_s"] = tree_cpu(self.upstream.proc.pid) - up0
        res["other_load_cores"] = max(0.0, other / max(wall, 1e-6))
        return res

    @staticmethod
    def measured(value, r, per_unit, **extra):
        """One measurement: the primary value, the proxy's CPU per unit of work
        and, for comparison, what the load generator's client and server spent
        per unit (a proxy is a server to its client and a client to its server:
        without a proxy those two ends are what the kernel asks of any proxy)."""
        m = {"value": value, "cpu": per_unit(r["proxy_cpu_s"]),
             "client_cpu": per_unit(r["client_cpu_s"]), "server_cpu": per_unit(r["server_cpu_s"]), "raw": r}
        m.update(extra)
        return m

    def common(self, proxy):
        # Every tunnel starts with a real ClientHello naming the S3 name (tunnel.verify_sni).
        a = ["--proxy", proxy.proxy_arg(), "--upstream", f"{ORIGIN_IP}:{self.upstream.tunnel_port}",
             "--hello", S3_NAME]
        if proxy.name != "none":
            a += ["--target", proxy.connect_target()]
        return a

    @staticmethod
    def s3gate_only(proxy, what):
        if not isinstance(proxy, (S3gate, NoProxy)):
            raise NotApplicable(f"{proxy.label} cannot {what}")

    def https_listener(self, proxy):
        """Options for a tunnel through the HTTPS proxy listener; without a proxy,
        TLS straight to the origin's TLS port (the tunnel protocol inside)."""
        if not isinstance(proxy, (S3gate, NoProxy, Squid)):
            raise NotApplicable(f"{proxy.label} has no HTTPS listener")
        ca = ["--ca", self.upstream.certs.ca, "--proxy-tls", "1", "--hello", S3_NAME]
        if proxy.name == "none":
            return ca + ["--proxy", "none", "--upstream", f"{ORIGIN_IP}:{TLS_PORT}", "--proxy-name", S3_NAME]
        return ca + ["--proxy", f"127.0.0.1:{proxy.tls_port}", "--proxy-name", PROXY_TLS_NAME,
                     "--target", proxy.connect_target()]

    def tls_bulk(self, proxy):
        total = (64 * MIB) if self.quick else GIB
        r = self.loadgen_json(["down", "--bytes", str(total), "--conns", "1", "--max-seconds", "60"]
                              + self.https_listener(proxy), 90, self.cpu_pid(proxy))
        if r["errors"] or r["timed_out"] or r["bytes"] != total:
            raise RuntimeError(f"HTTPS-listener download failed: {r}")
        return self.measured(r["bytes"] / 1e6 / r["seconds"], r, lambda s: s / (r["bytes"] / GIB))

    def tls_setup(self, proxy, resume):
        secs = 2 if self.quick else 6
        r = self.loadgen_json(["setup", "--conns", "50", "--count", "2000000", "--size", "100", "--resume",
                               "1" if resume else "0", "--max-seconds", str(secs)] + self.https_listener(proxy),
                              secs + 30, self.cpu_pid(proxy))
        if r["ok"] == 0:
            raise RuntimeError(f"HTTPS-listener setup failed: {r}")
        # With resumption every handshake but the first ones (one per client, and a
        # few that started before a ticket had come) must have resumed.
        if resume and r["tls_resumed"] == 0 and not isinstance(proxy, S3gate):
            raise NotApplicable(f"{proxy.label} resumed none of {r['tls_handshakes']} sessions")
        if resume and r["tls_resumed"] < r["tls_handshakes"] - 100:
            raise RuntimeError(f"sessions were not resumed: {r['tls_resumed']} of {r['tls_handshakes']}")
        if not resume and r["tls_resumed"]:
            raise RuntimeError(f"{r['tls_resumed']} handshakes resumed without --resume")
        return self.measured(r["ok"] / r["seconds"], r, lambda s: s * 1000 / (r["ok"] / 1000))

    def upstream_tls_target(self, proxy):
        """(process measured, loadgen options, URL scheme) for plain HTTP sent on over TLS: s3gate's
        twin with http.upstream_tls: true; without a proxy, the client's own TLS to the origin."""
        self.s3gate_only(proxy, "send plain HTTP on over TLS")
        if proxy.name == "none":
            return proxy, ["--proxy", "none", "--upstream", f"{ORIGIN_IP}:{TLS_PORT}", "--ca",
                           self.upstream.certs.ca], "https"
        t = proxy.twin()
        return t, ["--proxy", t.proxy_arg(), "--upstream", f"{ORIGIN_IP}:{TLS_PORT}"], "http"

    def utls_small(self, proxy):
        p, opts, scheme = self.upstream_tls_target(proxy)
        secs = 2 if self.quick else 6
        r = self.loadgen_json(["http", "--conns", "50", "--count", "20000000", "--url",
                               f"{scheme}://{S3_NAME}/o/1024", "--max-seconds", str(secs)] + opts,
                              secs + 30, self.cpu_pid(p))
        if r["ok"] == 0 or r["errors"]:
            raise RuntimeError(f"upstream-TLS 1 KiB failed: {r}")
        return self.measured(r["ok"] / r["seconds"], r, lambda s: s * 1000 / (r["ok"] / 1000))

    def utls_big(self, proxy, method):
        p, opts, scheme = self.upstream_tls_target(proxy)
        return self.http_big(p, method, scheme=scheme, opts=opts)

    def tls_get_tunnel(self, proxy, inspected):
        """One HTTPS GET of 1 GiB (quick: 64 MiB) through a CONNECT tunnel: to INSPECT_NAME
        (inspected by s3gate) or to S3_NAME (uncovered: blind). Without a proxy, straight
        to the origin: the same bytes, the two ends' TLS."""
        if inspected:
            self.s3gate_only(proxy, "inspect a tunnel")
        size = (64 * MIB) if self.quick else GIB
        name = INSPECT_NAME if inspected else S3_NAME
        r = self.loadgen_json(["http", "--conns", "1", "--count", "1", "--max-seconds", "60", "--url",
                               f"https://{name}/o/{size}", "--ca", self.upstream.certs.ca,
                               "--proxy", proxy.proxy_arg(), "--upstream", f"{ORIGIN_IP}:{TLS_PORT}"],
                              90, self.cpu_pid(proxy))
        if r["ok"] != 1 or r["errors"] or r["bytes"] != size:
            raise RuntimeError(f"HTTPS GET through a tunnel failed: {r}")
        return self.measured(r["bytes"] / 1e6 / r["seconds"], r, lambda s: s / (r["bytes"] / GIB))

    def cpu_pid(self, proxy):
        return None if proxy.name == "none" else proxy.pid

    # Each returns a dict: primary value, cpu value, raw loadgen result.

    def bulk(self, proxy, mode, conns):
        total = (256 * MIB) if self.quick else 2 * GIB
        r = self.loadgen_json([mode, "--bytes", str(total), "--conns", str(conns), "--max-seconds", "60"]
                              + self.common(proxy), 90, self.cpu_pid(proxy))
        if r["errors"] or r["timed_out"] or r["bytes"] != total:
            raise RuntimeError(f"{mode} failed: {r}")
        return self.measured(r["bytes"] / 1e6 / r["seconds"], r, lambda s: s / (r["bytes"] / GIB))

    def auth_users(self):
        """The users file of the authentication rows (made on first use)."""
        if self._auth is None:
            try:
                self._auth = AuthUsers(self.args.workdir_path)
            except NotApplicable as e:
                self._auth = e
        if isinstance(self._auth, Exception):
            raise self._auth
        return self._auth

    def setup_auth(self, proxy, cached):
        """`setup` with `Proxy-Authorization: Basic` on every CONNECT, through s3gate's twin
        with `auth.users_file`. Cached: one user, `cache_ttl` at its default (5m), after one
        unmeasured CONNECT has put the credentials in the cache; every measured check must
        be a cache hit. Uncached: `cache_ttl: 0s` and a user of its own for each CONNECT
        (no two checks in flight can share one verification), 8 clients (s3gate queues at
        most 32 checks per client address; 8 keep its verifier threads busy), a bounded
        count; every check must have been a verification (s3gate_auth_total). No proxy:
        the same loop with nothing to authenticate, for as long as `setup`."""
        if not isinstance(proxy, (S3gate, NoProxy)):
            raise NotApplicable(f"{proxy.label} is not set up with authentication here (an s3gate row)")
        secs = 2 if self.quick else 6
        if cached:
            conns, count, limit = 50, 2000000, secs
        else:
            conns, count, limit = 8, (60 if self.quick else 300), (20 if self.quick else 40)
        if proxy.name == "none":
            r = self.loadgen_json(["setup", "--conns", str(conns), "--count", "2000000", "--size", "100",
                                   "--max-seconds", str(secs)] + self.common(proxy), secs + 30)
            if r["ok"] == 0:
                raise RuntimeError(f"setup failed: {r}")
            return self.measured(r["ok"] / r["seconds"], r, lambda s: s * 1000 / (r["ok"] / 1000))
        users = self.auth_users()
        t = proxy.auth_twin(users, cached)
        creds = ["--proxy-user", AUTH_USER, "--proxy-password", users.PASSWORD]
        if cached:
            w = self.loadgen_json(["setup", "--conns", "1", "--count", "1", "--size", "100", "--max-seconds", "10"]
                                  + self.common(t) + creds, 30)
            if w["ok"] != 1:
                raise RuntimeError(f"an authenticated CONNECT failed: {w}")
        else:
            creds += ["--proxy-users", str(AUTH_USERS)]
        before = t.auth_counts()
        r = self.loadgen_json(["setup", "--conns", str(conns), "--count", str(count), "--size", "100",
                               "--max-seconds", str(limit)] + self.common(t) + creds, limit + 30, self.cpu_pid(t))
        after = t.auth_counts()
        checks = {k: round(after.get(k, 0.0) - before.get(k, 0.0)) for k in ("success", "cached", "failure", "missing")}
        r["s3gate_auth_total"] = checks
        if r["ok"] == 0 or r["errors"]:
            raise RuntimeError(f"authenticated setup failed: {r}")
        if checks["failure"] or checks["missing"] or checks["cached" if cached else "success"] < r["ok"] \
                or checks["success" if cached else "cached"]:
            raise RuntimeError(f"expected every check {'a cache hit' if cached else 'hashed'}: "
                               f"{r['ok']} tunnels, s3gate_auth_total went up by {checks}")
        return self.measured(r["ok"] / r["seconds"], r, lambda s: s * 1000 / (r["ok"] / 1000))

    def setup(self, proxy):
        secs = 2 if self.quick else 6
        r = self.loadgen_json(["setup", "--conns", "50", "--count", "2000000", "--size", "100",
                               "--max-seconds", str(secs)] + self.common(proxy), secs + 30, self.cpu_pid(proxy))
        if r["ok"] == 0:
            raise RuntimeError(f"setup failed: {r}")
        return self.measured(r["ok"] / r["seconds"], r, lambda s: s * 1000 / (r["ok"] / 1000))

    def idle(self, proxy, count, size):
        """Fresh proxy; RSS before; `count` tunnels opened (and `size` bytes echoed); RSS after."""
        proxy.restart()
        time.sleep(0.5)
        before = tree_rss_kib(proxy.pid)
        argv = [self.loadgen, "idle", "--count", str(count), "--size", str(size), "--window", "100",
                "--max-seconds", "120"] + self.common(proxy)
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.PIPE,
                             preexec_fn=raise_nofile)
        try:
            line = p.stdout.readline().decode()  # printed when all tunnels are up (bounded by --max-seconds)
            r = json.loads(line) if line.startswith("{") else {"ok": 0, "errors": count, "last_error": "no output"}
            time.sleep(1.0)  # let the proxy settle
            after = tree_rss_kib(proxy.pid)
            threads = sum(len(os.listdir(f"/proc/{q}/task")) for q in tree(proxy.pid) if os.path.isdir(f"/proc/{q}"))
        finally:
            with contextlib.suppress(OSError):
                p.stdin.close()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                stop_pid(p)
        if r["ok"] < count:
            raise RuntimeError(f"only {r['ok']} of {count} tunnels held ({r.get('last_error')})")
        r.update({"rss_before_kib": before, "rss_after_kib": after, "threads": threads})
        return {"value": (after - before) / count, "cpu": None, "raw": r}

    def pingpong(self, proxy):
        count = 2000 if self.quick else 20000
        every = {0}
        all_cpus = set(range(os.cpu_count() or 1))
        pin_tree(self.upstream.proc.pid, every)
        if proxy.name != "none":
            pin_tree(proxy.pid, every)
        try:
            r = self.loadgen_json(["pingpong", "--count", str(count), "--warmup", "1000", "--size", "100",
                                   "--max-seconds", "30"] + self.common(proxy), 60, self.cpu_pid(proxy), pin=True)
        finally:
            pin_tree(self.upstream.proc.pid, all_cpus)
            if proxy.name != "none":
                pin_tree(proxy.pid, all_cpus)
        if r["timed_out"] or r["ok"] == 0:
            raise RuntimeError(f"pingpong failed: {r}")
        # CPU over the warm-up as well: count + warmup round trips.
        return self.measured(r["p50_us"], r, lambda s: s * 1e6 / (r["ok"] + 1000), value2=r["p99_us"])

    def http_small(self, proxy):
        secs = 2 if self.quick else 6
        r = self.loadgen_json(["http", "--conns", "50", "--count", "20000000", "--url",
                               f"http://{S3_NAME}/o/1024", "--max-seconds", str(secs)]
                              + self.http_common(proxy), secs + 30, self.cpu_pid(proxy))
        if r["ok"] == 0 or r["errors"]:
            raise RuntimeError(f"http 1 KiB failed: {r}")
        return self.measured(r["ok"] / r["seconds"], r, lambda s: s * 1000 / (r["ok"] / 1000))

    def http_big(self, proxy, method, scheme="http", opts=None):
        n = 2 if self.quick else 8
        size = 64 * MIB
        argv = ["http", "--conns", "1", "--count", str(n), "--max-seconds", "60", "--method", method]
        argv += ["--url", f"{scheme}://{S3_NAME}/o/{size}"] if method == "GET" else \
            ["--url", f"{scheme}://{S3_NAME}/o/put", "--bytes", str(size)]
        r = self.loadgen_json(argv + (opts or self.http_common(proxy)), 90, self.cpu_pid(proxy))
        if r["ok"] != n or r["errors"] or r["bytes"] != n * size:
            raise RuntimeError(f"http {method} 64 MiB failed: {r}")
        return self.measured(r["bytes"] / 1e6 / r["seconds"], r, lambda s: s / (r["bytes"] / GIB))

    def http_common(self, proxy):
        return ["--proxy", proxy.proxy_arg(), "--upstream", f"{ORIGIN_IP}:80"]


# name, title, primary unit, higher is better, cpu unit, runner, rounds (None: args.rounds), no-proxy too
def workloads(runner, quick):
    idle_counts = [1000] if quick else [5000]
    # Each tunnel costs the proxy two descriptors; the hard limit decides the larger count.
    big = min(50000, (nofile_hard() - 2000) // 2 // 1000 * 1000)
    if not quick and big > 5000:
        idle_counts.append(big)
    w = [
        ("down1", "1 CONNECT tunnel, download", "MB/s", True, "CPU-s/GiB", lambda p: runner.bulk(p, "down", 1), None, True),
        ("up1", "1 CONNECT tunnel, upload", "MB/s", True, "CPU-s/GiB", lambda p: runner.bulk(p, "up", 1), None, True),
        ("down8", "8 CONNECT tunnels, download", "MB/s", True, "CPU-s/GiB", lambda p: runner.bulk(p, "down", 8), None, True),
        ("setup", "tunnel setup (connect, CONNECT, 200, 100 B echo, close), 50 clients", "tunnels/s", True,
         "CPU-ms/1000", runner.setup, None, True),
        # s3gate only: its twin with auth.users_file (the no-proxy row: the same loop, no auth).
        ("setup_auth", "tunnel setup with Proxy-Authorization, one user, cached (cache_ttl 5m), 50 clients",
         "tunnels/s", True, "CPU-ms/1000", lambda p: runner.setup_auth(p, True), None, True),
        ("setup_auth_uncached", f"tunnel setup, every check hashed (bcrypt cost {AUTH_BCRYPT_COST}, cache_ttl 0s, "
         f"a user per CONNECT), 8 clients, {60 if quick else 300} tunnels", "tunnels/s", True, "CPU-ms/1000",
         lambda p: runner.setup_auth(p, False), None, True),
        ("pingpong", "100 B ping-pong in one tunnel, all pinned to CPU 0", "p50 (p99) us", False,
         "CPU-us/RT", runner.pingpong, None, True),
        ("http1k", "plain HTTP 1 KiB GET, keep-alive, 50 clients", "req/s", True, "CPU-ms/1000",
         runner.http_small, None, True),
        ("get64m", "plain HTTP 64 MiB GET", "MB/s", True, "CPU-s/GiB", lambda p: runner.http_big(p, "GET"), None, True),
        ("put64m", "plain HTTP 64 MiB PUT", "MB/s", True, "CPU-s/GiB", lambda p: runner.http_big(p, "PUT"), None, True),
        # TLS. No proxy: the client's and the origin's own TLS (one pass each end).
        ("utls_get64m", "plain HTTP 64 MiB GET, upstream TLS (no proxy: https)", "MB/s", True, "CPU-s/GiB",
         lambda p: runner.utls_big(p, "GET"), None, True),
        ("utls_put64m", "plain HTTP 64 MiB PUT, upstream TLS (no proxy: https)", "MB/s", True, "CPU-s/GiB",
         lambda p: runner.utls_big(p, "PUT"), None, True),
        ("utls_http1k", "plain HTTP 1 KiB GET, upstream TLS, keep-alive, 50 clients", "req/s", True,
         "CPU-ms/1000", runner.utls_small, None, True),
        ("tlsl_down1", "1 tunnel through the HTTPS listener, download", "MB/s", True, "CPU-s/GiB",
         runner.tls_bulk, None, True),
        ("tlsl_setup", "tunnel setup through the HTTPS listener, full handshakes, 50 clients", "tunnels/s",
         True, "CPU-ms/1000", lambda p: runner.tls_setup(p, False), None, True),
        ("tlsl_setup_resumed", "tunnel setup through the HTTPS listener, resumed sessions, 50 clients",
         "tunnels/s", True, "CPU-ms/1000", lambda p: runner.tls_setup(p, True), None, True),
        ("blind_https1g", "HTTPS GET 1 GiB through a blind tunnel", "MB/s", True, "CPU-s/GiB",
         lambda p: runner.tls_get_tunnel(p, False), None, True),
        ("inspect_https1g", "HTTPS GET 1 GiB through an inspected tunnel", "MB/s", True, "CPU-s/GiB",
         lambda p: runner.tls_get_tunnel(p, True), None, True),
    ]
    for n in idle_counts:
        w.append((f"idle{n}", f"{n} idle tunnels after 100 B echoed each way: RSS", "KiB/tunnel", False,
                  None, (lambda n: lambda p: runner.idle(p, n, 100))(n), 1, False))
    w.append((f"idle{idle_counts[0]}-nobytes", f"{idle_counts[0]} idle tunnels, no byte relayed: RSS",
              "KiB/tunnel", False, None, lambda p: runner.idle(p, idle_counts[0], 0), 1, False))
    return w


# ---------------------------------------------------------------------------
# the syscall profile (--syscalls)


def syscall_profile(runner, proxy, mib):
    """strace -c -f on the proxy during one download and one upload of `mib` MiB."""
    if not shutil.which("strace"):
        return {"skipped": "strace is not installed"}
    out = {}
    for mode in ("down", "up"):
        path = os.path.join(runner.args.workdir_path, f"strace-{proxy.name}-{mode}.txt")
        tr = subprocess.Popen(["strace", "-c", "-f", "-o", path, "-p", str(proxy.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        try:
            runner.loadgen_json([mode, "--bytes", str(mib * MIB), "--conns", "1", "--max-seconds", "120"]
                                + runner.common(proxy), 150, proxy.pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(tr.pid, signal.SIGINT)
            tr.wait(20)
        calls = {}
        with open(path) as f:
            for line in f:
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
                if m and m.group(2) != "total":
                    calls[m.group(2)] = int(m.group(1))
        out[mode] = {"per_mib": {k: round(v / mib, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
                                 if v / mib >= 0.05},
                     "total_per_mib": round(sum(calls.values()) / mib, 2),
                     "bytes_per_read": round(mib * MIB / max(1, sum(calls.get(k, 0) for k in
                                                                    ("read", "recvfrom", "readv", "recvmsg", "splice")))),
                     "file": path}
    return out


def measured_process(runner, proxy, name):
    """The s3gate process a workload's CPU is read from: the upstream-TLS twin for the
    utls_* rows, the authentication twins for setup_auth*, else s3gate itself."""
    if name.startswith("utls_"):
        return proxy.twin()
    if name in ("setup_auth", "setup_auth_uncached"):
        return proxy.auth_twin(runner.auth_users(), name == "setup_auth")
    return proxy


def perf_profile(runner, proxy, name, fn):
    """perf record (cpu-clock: no hardware counters needed) on the proxy while
    workload `name` runs once; returns where its CPU went: kernel, user-space
    objects, and the system calls with the kernel work under them."""
    if not shutil.which("perf"):
        return {"skipped": "perf is not installed (Debian: linux-perf)"}
    data = os.path.join(runner.args.workdir_path, f"perf-{proxy.name}-{name}.data")
    try:
        target = measured_process(runner, proxy, name)
    except NotApplicable as e:
        return {"skipped": str(e)}
    rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g", "-o", data,
                            "-p", str(target.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        fn(proxy)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGINT)
        rec.wait(60)

    def report(*extra):
        r = subprocess.run(["perf", "report", "-i", data, "--stdio"] + list(extra),
                           capture_output=True, text=True, timeout=300)
        return r.stdout.splitlines()

    where = {}
    for line in report("--no-children", "--sort", "dso", "-g", "none"):
        m = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
        if m and float(m.group(1)) >= 0.5:
            where[m.group(2).strip("[]")] = float(m.group(1))
    calls = {}
    for line in report("--children", "--sort", "sym", "-g", "none"):
        m = re.match(r"\s*([\d.]+)%\s+[\d.]+%\s+\[k\] __x64_sys_(\w+)$", line)
        if m and float(m.group(1)) >= 0.5:
            calls[m.group(2)] = float(m.group(1))
    symbols = {}
    for line in report("--no-children", "--sort", "sym", "-g", "none"):
        m = re.match(r"\s*([\d.]+)%\s+\[[k.]\]\s+(\S+)", line)
        if m and float(m.group(1)) >= 1.0 and len(symbols) < 15:
            symbols[m.group(2)] = float(m.group(1))
    return {"process": target.name, "cpu_share_pct": where, "syscalls_pct": calls, "top_symbols_pct": symbols,
            "file": data}


def strace_workload(runner, proxy, name, fn):
    """strace -c -f on s3gate (or its upstream-TLS twin) while workload `name`
    runs once (not timed: strace slows the proxy): system calls per MiB moved
    and bytes per read call, e.g. whether OpenSSL reads each record in two calls."""
    if not shutil.which("strace"):
        return {"skipped": "strace is not installed"}
    try:
        target = measured_process(runner, proxy, name)
    except NotApplicable as e:
        return {"skipped": str(e)}
    path = os.path.join(runner.args.workdir_path, f"strace-{target.name}-{name}.txt")
    tr = subprocess.Popen(["strace", "-c", "-f", "-o", path, "-p", str(target.pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        m = fn(proxy)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(tr.pid, signal.SIGINT)
        tr.wait(20)
    moved = m["raw"].get("bytes", 0)
    calls = {}
    with open(path) as f:
        for line in f:
            mm = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
            if mm and mm.group(2) != "total":
                calls[mm.group(2)] = int(mm.group(1))
    reads = sum(calls.get(k, 0) for k in ("read", "recvfrom", "readv", "recvmsg"))
    if moved == 0 and m["raw"].get("ok"):
        # A row that counts tunnels or requests (setup*, ...): calls per one of them.
        n = m["raw"]["ok"]
        return {"process": target.name, "units": n,
                "per_unit": {k: round(v / n, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
                             if v / n >= 0.01}, "file": path}
    mib = max(moved / MIB, 1e-9)
    return {"process": target.name, "mib": round(mib, 1),
            "per_mib": {k: round(v / mib, 1) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
                        if v / mib >= 0.05},
            "bytes_per_read": round(moved / reads) if reads else None, "file": path}


# ---------------------------------------------------------------------------
# the table


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit in ("MB/s", "tunnels/s", "req/s"):
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# Cipher passes over every byte a TLS row needs in the proxy (AES-128-GCM):
# the floor column is this many times `openssl speed`'s CPU-s per GiB.
FLOOR_PASSES = {"utls_get64m": 1, "utls_put64m": 1, "tlsl_down1": 1, "blind_https1g": 0, "inspect_https1g": 2}


def table(results, order, specs):
    cols = [p for p in order]
    floor = results["meta"].get("cipher_floor")
    head = ["workload"] + [results["proxies"][p]["label"] for p in cols] + \
        ["s3gate w1 ÷ best peer", "s3gate w2 ÷ best peer", "s3gate w1 ÷ no proxy", "cipher floor, CPU-s/GiB"]
    rows = []
    for name, title, unit, higher, cpu_unit, *_ in specs:
        w = results["workloads"].get(name)
        if not w:
            continue
        cells = [f"{title}: {unit}" + (f"; {cpu_unit}" if cpu_unit else "")]
        for p in cols:
            m = w.get(p)
            if m is None or "median" not in m:
                if m is not None and "n/a" in m:
                    cells.append("n/a")
                else:
                    cells.append("n/a" if m is None else f"n/a ({m.get('error', 'skipped')[:60]})")
                continue
            med = m["median"]
            s = fmt(med["value"], unit)
            if med.get("value2") is not None:
                s += f" ({fmt(med['value2'], unit)})"
            if cpu_unit and p != "none":  # no proxy, no proxy CPU
                s += f"; {fmt(med['cpu'], cpu_unit)}"
            cells.append(s)
        peers = [w[p]["median"] for p in ("squid", "tinyproxy") if p in w and "median" in w[p]]
        best_v = (max if higher else min)((x["value"] for x in peers), default=None)
        best_c = min((x["cpu"] for x in peers if x["cpu"] is not None), default=None)
        for s3 in ("s3gate-w1", "s3gate-w2"):
            m = w.get(s3, {}).get("median")
            if not m:
                cells.append("n/a")
                continue
            rv = ratio(m["value"], best_v)
            rc = ratio(m["cpu"], best_c)
            cells.append((f"{rv:.2f}×" if rv else "n/a") + (f"; CPU {rc:.2f}×" if rc else ""))
        m = w.get("s3gate-w1", {}).get("median")
        n = w.get("none", {}).get("median")
        rv = ratio(m["value"], n["value"]) if m and n else None
        cells.append(f"{rv:.2f}×" if rv else "n/a")
        passes = FLOOR_PASSES.get(name)
        if passes is None or not floor:
            cells.append("")
        else:
            cells.append(f"{passes * floor['cpu_s_per_gib']:.2f} ({passes} pass{'' if passes == 1 else 'es'})")
        rows.append(cells)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------



DEBIAN_PEERS = {"squid": "squid", "tinyproxy": "tinyproxy"}


def install_peers(wanted, no_install):
    """Installs the peers that were asked for and are missing, from Debian's
    packages (root only; otherwise they are skipped with the reason). The
    packages' own services are not used: every proxy here is our child with
    its own configuration."""
    missing = [pkg for name, pkg in DEBIAN_PEERS.items()
               if name in wanted and not shutil.which(pkg) and not os.path.exists(f"/usr/sbin/{pkg}")
               and not os.path.exists(f"/usr/bin/{pkg}")]
    if not missing or no_install:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log(f"not installing {' '.join(missing)}: needs root and apt-get")
        return
    log(f"installing {' '.join(missing)} from Debian's packages")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
                   env=env, check=False, timeout=900)

def main():
    global ORIGIN_IP
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, one round, seconds")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"),
                    help="where s3gate and test/bench/loadgen were built (default: build-bench)")
    ap.add_argument("--s3gate", default=None,
                    help="the s3gate binary to measure (default: BUILD_DIR/s3gate), e.g. one built from a clean "
                    "git archive of HEAD while proxy/ is being edited")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per measurement, median reported (3; quick: 1)")
    ap.add_argument("--only", default="", help="comma-separated workload names (down1,up1,down8,setup,setup_auth,"
                    "setup_auth_uncached,pingpong,http1k,get64m,put64m,idle5000,...)")
    ap.add_argument("--proxies", default="none,s3gate-w1,s3gate-w1-nolog,s3gate-w2,squid,tinyproxy")
    ap.add_argument("--compare", default=None,
                    help="another s3gate binary, measured as column s3gate-w1-b (w1, the same configuration) "
                    "interleaved with the others: an A/B of a change in one run")
    ap.add_argument("--no-install", action="store_true",
                    help="do not apt-get install the peers (squid, tinyproxy) when they are missing")
    ap.add_argument("--syscalls", action="store_true",
                    help="also strace -c -f each proxy (s3gate w1, Squid, tinyproxy) during a 1 GiB download "
                    "and upload: system calls per MiB (slow; not timed)")
    ap.add_argument("--profile", default=None,
                    help="after the measurements, run these workloads once more (comma-separated names) "
                    "with `perf record -e cpu-clock -g` on s3gate w1 and print where its CPU went")
    ap.add_argument("--strace", default=None,
                    help="after the measurements, run these workloads once more (comma-separated names) with "
                    "`strace -c -f` on s3gate w1 (its upstream-TLS twin for utls_*): system calls per MiB")
    ap.add_argument("--origin-ip", default=ORIGIN_IP,
                    help=f"the loopback address the upstream listens on (ports 80, 443 and one more; default "
                         f"{ORIGIN_IP}): another address lets two runs share a machine without sharing ports")
    ap.add_argument("--output", default=os.path.join(HERE, "results", "last.json"))
    args = ap.parse_args()
    if not args.origin_ip.startswith("127."):
        raise SystemExit(f"--origin-ip {args.origin_ip}: a loopback address (127.0.0.0/8) only")
    ORIGIN_IP = args.origin_ip
    rounds = args.rounds or (1 if args.quick else 3)
    started = time.time()

    binary = os.path.abspath(args.s3gate or os.path.join(args.build_dir, "s3gate"))
    loadgen = os.path.abspath(os.path.join(args.build_dir, "test", "bench", "loadgen"))
    if not os.access(loadgen, os.X_OK):
        raise SystemExit(f"no loadgen at {loadgen}: build it (ninja -C {args.build_dir} s3gate_loadgen)")

    workdir = tempfile.mkdtemp(prefix="s3gate-bench-")
    os.chmod(workdir, 0o755)
    args.workdir_path = workdir
    log(f"work directory: {workdir}")

    # How busy is the machine before we start? (other jobs skew every figure)
    b0 = machine_busy()
    time.sleep(1.0)
    load_before = machine_busy() - b0

    certs = Certs(workdir)
    upstream = Upstream(loadgen, workdir, certs)
    wanted = [p.strip() for p in args.proxies.split(",") if p.strip()]
    if args.compare and "s3gate-w1-b" not in wanted:
        wanted.insert(wanted.index("s3gate-w1") + 1 if "s3gate-w1" in wanted else len(wanted), "s3gate-w1-b")
    every = {
        "none": lambda: NoProxy(workdir, upstream),
        "s3gate-w1": lambda: S3gate(workdir, upstream, binary, 1),
        "s3gate-w1-nolog": lambda: S3gate(workdir, upstream, binary, 1, log=False),
        "s3gate-w1-b": lambda: S3gate(workdir, upstream, os.path.abspath(args.compare or ""), 1, variant="b"),
        "s3gate-w2": lambda: S3gate(workdir, upstream, binary, 2),
        "squid": lambda: Squid(workdir, upstream),
        "tinyproxy": lambda: Tinyproxy(workdir, upstream),
    }
    install_peers(wanted, args.no_install)
    proxies, skipped = [], {}
    for name in wanted:
        p = every[name]()
        why = p.available()
        if why:
            log(f"skipping {name}: {why}")
            skipped[name] = why
        else:
            proxies.append(p)

    runner = Runner(args, loadgen, upstream)
    specs = workloads(runner, args.quick)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    if only:
        specs = [s for s in specs if s[0] in only]

    results = {
        "meta": {
            "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
            "quick": args.quick, "rounds": rounds,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "nofile_hard": nofile_hard(),
                        "busy_cores_before_start": round(load_before, 2)},
            "s3gate": binary,
            "versions": {},
            "notes": {},
            "skipped": skipped,
        },
        "proxies": {p.name: {"label": p.label, "note": p.note} for p in proxies},
        "workloads": {},
    }
    for p in proxies:
        if hasattr(p, "version"):
            results["meta"]["versions"][p.name] = p.version()
    if load_before > 0.3:
        log(f"warning: the machine was already {load_before:.2f} cores busy before the run: figures will be noisy")
    if any(s[0] in FLOOR_PASSES for s in specs):
        results["meta"]["cipher_floor"] = cipher_floor(1 if args.quick else 3)
        log(f"cipher floor: {results['meta']['cipher_floor']}")

    try:
        upstream.start()
        for p in proxies:
            p.start()
        for name, title, unit, higher, cpu_unit, fn, nrounds, with_none in specs:
            wres = results["workloads"].setdefault(name, {})
            for rnd in range(nrounds or rounds):
                for p in proxies:
                    if p.name == "none" and not with_none:
                        continue
                    entry = wres.setdefault(p.name, {"rounds": []})
                    if "error" in entry or "n/a" in entry:
                        continue
                    try:
                        m = fn(p)
                        entry["rounds"].append(m)
                        log(f"{name:>16} r{rnd + 1} {p.name:<10} {fmt(m['value'], unit):>10} {unit}"
                            + (f"  {fmt(m['cpu'], cpu_unit)} {cpu_unit}" if m["cpu"] is not None else "")
                            + f"  (other load {m['raw'].get('other_load_cores', 0):.2f} cores)")
                    except NotApplicable as e:
                        entry["n/a"] = str(e)
                    except Exception as e:  # a failing proxy is reported, the run goes on
                        entry["error"] = str(e)
                        log(f"{name:>16} r{rnd + 1} {p.name:<10} FAILED: {e}")
                        with contextlib.suppress(Exception):
                            if p.proc is not None and p.proc.poll() is not None:
                                p.start()
            for pname, entry in wres.items():
                rs = entry["rounds"]
                if rs:
                    entry["median"] = {k: (statistics.median(r[k] for r in rs) if rs[0].get(k) is not None else None)
                                       for k in ("value", "value2", "cpu", "client_cpu", "server_cpu")
                                       if k in rs[0]}
                    entry["median"].setdefault("value2", None)
                    entry["max_other_load_cores"] = round(max(r["raw"].get("other_load_cores", 0) for r in rs), 2)
        # Profiles and system-call counts of s3gate w1 (and of the --compare binary: "NAME (b)").
        profiled = [(p, "" if p.name == "s3gate-w1" else " (b)") for p in proxies
                    if p.name in ("s3gate-w1", "s3gate-w1-b")]
        wanted_profiles = [x.strip() for x in (args.profile or "").split(",") if x.strip()]
        if wanted_profiles:
            results["profiles"] = {}
            for s3, tag in profiled:
                for spec in specs:
                    if spec[0] in wanted_profiles:
                        results["profiles"][spec[0] + tag] = perf_profile(runner, s3, spec[0], spec[5])
        wanted_straces = [x.strip() for x in (args.strace or "").split(",") if x.strip()]
        if wanted_straces:
            results["straces"] = {}
            for s3, tag in profiled:
                for spec in specs:
                    if spec[0] in wanted_straces:
                        results["straces"][spec[0] + tag] = strace_workload(runner, s3, spec[0], spec[5])
        if args.syscalls:
            results["syscalls"] = {}
            for p in proxies:
                if p.name in ("s3gate-w1", "squid", "tinyproxy"):
                    with contextlib.suppress(Exception):
                        p.restart()  # a fresh process: the idle workloads may have left it busy
                    results["syscalls"][p.name] = syscall_profile(runner, p, 64 if args.quick else 1024)
    finally:
        for p in proxies:
            p.stop()
        upstream.stop()

    if isinstance(runner._auth, AuthUsers):
        results["meta"]["auth_hash"] = runner._auth.info()
    results["meta"]["seconds"] = round(time.time() - started, 1)
    order = [p.name for p in proxies]
    text = table(results, order, specs)
    results["table_markdown"] = text
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=1)
    print(text)
    print()
    for p in proxies:
        if p.note:
            print(f"- {p.label}: {p.note}")
    for k, v in skipped.items():
        print(f"- {k} skipped: {v}")
    for name, title, unit, higher, cpu_unit, *_ in specs:
        rounds_w2 = results["workloads"].get(name, {}).get("s3gate-w2", {}).get("rounds", [])
        workers = {}
        for r in rounds_w2:
            for k, v in r["raw"].get("threads_cpu_s", {}).items():
                if k.startswith("s3gate-w"):
                    workers[k] = workers.get(k, 0.0) + v
        if name == "setup" and sum(workers.values()) > 0:
            total = sum(workers.values())
            print("- s3gate w2, setup: share of the worker threads' CPU (SO_REUSEPORT spreads the tunnels): "
                  + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(workers.items())))
    ends = []
    for name, title, unit, higher, cpu_unit, *_ in specs:
        n = results["workloads"].get(name, {}).get("none", {}).get("median")
        if cpu_unit and n and n.get("client_cpu") is not None:
            ends.append(f"{name} {fmt(n['client_cpu'], cpu_unit)} + {fmt(n['server_cpu'], cpu_unit)} {cpu_unit}")
    if ends:
        print("- no proxy, CPU of the load generator's two ends per unit (client + server; a proxy is both): "
              + "; ".join(ends))
    for wname, prof in results.get("profiles", {}).items():
        if "skipped" in prof:
            print(f"- perf profile of s3gate w1, {wname}: skipped ({prof['skipped']})")
            continue
        share = ", ".join(f"{k} {v:.1f}%" for k, v in prof["cpu_share_pct"].items())
        calls = ", ".join(f"{k} {v:.1f}%" for k, v in sorted(prof["syscalls_pct"].items(), key=lambda kv: -kv[1]))
        syms = ", ".join(f"{k} {v:.1f}%" for k, v in prof.get("top_symbols_pct", {}).items())
        print(f"- perf profile of {prof.get('process', 's3gate w1')}, {wname}: {share}; system calls with the kernel "
              f"work under them: {calls}; top symbols: {syms}")
    for wname, st in results.get("straces", {}).items():
        if "skipped" in st:
            continue
        if "per_unit" in st:
            print(f"- strace -c of {st['process']}, {wname} ({st['units']} done): calls per tunnel or request "
                  f"{st['per_unit']}")
            continue
        print(f"- strace -c of {st['process']}, {wname} ({st['mib']} MiB): calls per MiB {st['per_mib']}; "
              f"bytes moved per read call {st['bytes_per_read']}")
    ah = results["meta"].get("auth_hash")
    if ah:
        per = ah["cpu_ms_per_hash"]
        print(f"- authentication rows: {ah['users']} users, one {ah['kind']} hash made by {ah['made_by']}; "
              + (f"one verification (crypt() in run.py) {per:.1f} CPU-ms: the uncached row's floor is "
                 f"{per * 1000:,.0f} CPU-ms per 1000 tunnels on top of setup" if per else "verification not timed"))
    floor = results["meta"].get("cipher_floor")
    if floor:
        print(f"- cipher floor: `{floor['command']}` ({floor['version']}): {floor['mb_per_s']:,} MB/s on one core, "
              f"{floor['cpu_s_per_gib']} CPU-s per GiB per pass")
    for pname, prof in results.get("syscalls", {}).items():
        for mode, s in prof.items():
            if isinstance(s, dict):
                print(f"- {pname} system calls per MiB, {mode}: {s.get('per_mib')} (bytes per read call: "
                      f"{s.get('bytes_per_read')})")
    print(f"- {results['meta']['seconds']} s in all; results in {os.path.relpath(args.output, ROOT)}; "
          f"configs and logs in {workdir}")
    failed = [f"{w}/{p}" for w, e in results["workloads"].items() for p, m in e.items() if "error" in m]
    if failed:
        print(f"- FAILED: {', '.join(failed)}")
        sys.exit(1)


def proc_children_cpu_self():
    """CPU of reaped children of this process (the loadgen clients), cumulative; see Runner."""
    t = os.times()
    return t.children_user + t.children_system


if __name__ == "__main__":
    main()
