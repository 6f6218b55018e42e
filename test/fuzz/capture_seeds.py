#!/usr/bin/env python3
"""Captures real inputs as seeds for the fuzz harnesses (test/fuzz/corpus/NAME/).

    python3 test/fuzz/capture_seeds.py

What it writes, and from what:

  fuzz_http_parser/, fuzz_http_message/
      req-curl-*, req-aws-*   request heads that curl and the AWS CLI send to an
                              HTTP proxy (absolute-form and CONNECT), recorded by a
                              listener that answers each with a short response
  fuzz_http_message/
      resp-moto-*             whole responses (head and start of the body) of
                              moto's S3 server to ordinary S3 requests
      chunked-*               chunked bodies: the example of RFC 9112 section 7.1
                              and the chunked uploads curl sends (recorded)
  fuzz_proxy_protocol/
      haproxy-*               what HAProxy sends a server with send-proxy,
                              send-proxy-v2 (with TLVs) and its LOCAL health checks
      nlb-v2-vpce             a v2 header with the AWS VPC endpoint TLV (type 0xEA,
                              subtype 0x01), built as the NLB documentation lays it
                              out (no NLB here to record)
  fuzz_host_name/             host names from the S3 endpoint documentation and
                              the spellings clients use
  fuzz_config/                packaging/s3gate.yaml (the loader also gets
                              test/data/good-configs and bad-configs)
  fuzz_tls_peek/              copies of test/data/clienthello/*.bin (curl, openssl)

Captures differ run to run (ports, dates, signatures); any capture will do. A
missing tool (aws, moto, haproxy) is reported and its seeds skipped.
Loopback only; every wait is bounded; each child is ended by its own PID.
"""

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
LOOPBACK = "127.0.0.1"
BUCKET_HOST = "media.s3.us-west-2.amazonaws.com"


def write(target, name, data):
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)
    print(f"  {target}/{name}: {len(data)} bytes")


def free_port():
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class Recorder:
    """Accepts connections; records what each client sends first (up to the blank
    line of a head, then `body_wait` more seconds of body) and answers `reply`."""

    def __init__(self, reply=b"", body_wait=0.0, family=socket.AF_INET, host=LOOPBACK):
        self.sock = socket.socket(family)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.body_wait = body_wait
        self.records = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                self.records.append(self._read(conn))

    def _read(self, conn):
        data = b""
        replied = False
        deadline = time.monotonic() + 3.0
        conn.settimeout(0.2)
        while time.monotonic() < deadline and len(data) < 16384:
            if not replied and b"\r\n\r\n" in data:
                replied = True
                reply = self.reply(data) if callable(self.reply) else self.reply
                if reply:
                    conn.sendall(reply)
                deadline = min(deadline, time.monotonic() + self.body_wait)
            try:
                chunk = conn.recv(4096)
            except socket.timeout:
                if data and not self.reply:  # nothing to answer: a pause ends the capture
                    break
                continue
            except OSError:  # reset by the client
                break
            if not chunk:
                break
            data += chunk
        return data

    def take(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while not self.records and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.records.pop(0) if self.records else None

    def stop(self):
        self.stopping = True
        self.thread.join(2)
        self.sock.close()


def run(args, env=None, stdin=None, timeout=20):
    try:
        subprocess.run(args, env=env, input=stdin, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"  {args[0]}: {exc}")


def answer(head):
    if b"\r\nexpect: 100-continue\r\n" in head.lower():
        return b"HTTP/1.1 100 Continue\r\n\r\n"  # then the body, until the capture ends
    if head.startswith(b"CONNECT "):
        return b"HTTP/1.1 200 Connection established\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def head_only(data):
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[:end + 4]


# ---- request heads -------------------------------------------------------------

def capture_curl():
    rec = Recorder(reply=answer, body_wait=0.5)
    proxy = f"http://{LOOPBACK}:{rec.port}"
    url = f"http://{BUCKET_HOST}/photos/2024/cat.jpg"
    base = ["curl", "-s", "--max-time", "3", "-x", proxy, "-o", "/dev/null"]
    cases = [
        ("get", base + [url], None),
        ("head", base + ["-I", url], None),
        ("get-range", base + ["-H", "Range: bytes=0-1023", url + "?versionId=3HL4kqtJlcpXroDTDmJ"],
         None),
        ("delete", base + ["-X", "DELETE", url], None),
        ("put", base + ["-T", "-", "-H", "Content-Length: 11", url], b"hello world"),
        ("proxy-auth", base + ["--proxy-user", "alice:secret", url], None),
        ("path-style", base + [f"http://s3.us-west-2.amazonaws.com/media/a%20b.txt?x-id=GetObject"],
         None),
        ("http10", base + ["-0", url], None),
        ("connect", base + ["-p", f"https://{BUCKET_HOST}/"], None),
        ("connect-ip", base + ["-p", "https://127.0.0.1:8443/"], None),
        ("connect-ipv6", base + ["-p", "-g", "https://[::1]:443/"], None),
    ]
    chunked = None
    for name, args, stdin in cases:
        run(args, stdin=stdin)
        data = rec.take()
        if data:
            write("fuzz_http_parser", f"req-curl-{name}", head_only(data))
            write("fuzz_http_message", f"req-curl-{name}", head_only(data))
    # A chunked upload: curl reads stdin of unknown length.
    run(base + ["-T", "-", url], stdin=b"first line\nsecond line\n")
    data = rec.take()
    if data:
        head = head_only(data)
        write("fuzz_http_parser", "req-curl-put-chunked", head)
        write("fuzz_http_message", "req-curl-put-chunked", head)
        chunked = data[len(head):]
        if chunked:
            write("fuzz_http_message", "chunked-curl-upload", chunked)
    rec.stop()


def capture_aws():
    if not shutil.which("aws"):
        print("  aws CLI not found: no AWS CLI request heads")
        return
    rec = Recorder(reply=answer, body_wait=0.3)
    tmp = tempfile.mkdtemp(prefix="seeds-aws-")
    small = os.path.join(tmp, "report.csv")
    with open(small, "wb") as f:
        f.write(b"id,value\n1,2\n")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update({
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "AWS_DEFAULT_REGION": "us-west-2", "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "HTTP_PROXY": f"http://{LOOPBACK}:{rec.port}", "HTTPS_PROXY": f"http://{LOOPBACK}:{rec.port}",
        "NO_PROXY": "",
    })
    http_endpoint = ["--endpoint-url", "http://s3.us-west-2.amazonaws.com"]
    opts = ["--cli-read-timeout", "3", "--cli-connect-timeout", "3"]
    cases = [
        ("list-objects", ["aws", "s3api", "list-objects-v2", "--bucket", "media", "--prefix", "logs/"]
         + http_endpoint + opts),
        ("put-object", ["aws", "s3api", "put-object", "--bucket", "media", "--key", "reports/report.csv",
                        "--body", small] + http_endpoint + opts),
        ("head-object", ["aws", "s3api", "head-object", "--bucket", "media", "--key", "a/b c.txt"]
         + http_endpoint + opts),
        ("cp", ["aws", "s3", "cp", small, "s3://media/reports/report.csv"] + http_endpoint + opts),
        ("connect", ["aws", "s3api", "list-buckets"] + opts),
    ]
    for name, args, in cases:
        run(args, env=env, timeout=30)
        data = rec.take()
        if data:
            write("fuzz_http_parser", f"req-aws-{name}", head_only(data))
            write("fuzz_http_message", f"req-aws-{name}", head_only(data))
        while rec.take(timeout=0.5):  # a retry, if the CLI made one
            pass
    rec.stop()
    shutil.rmtree(tmp, ignore_errors=True)


# ---- response heads --------------------------------------------------------------

def capture_moto():
    try:
        import moto  # noqa: F401
    except ImportError:
        print("  moto not installed: no response seeds")
        return
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection((LOOPBACK, port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        host = f"Host: media.s3.us-west-2.amazonaws.com:{port}\r\n"
        create = (b"<CreateBucketConfiguration><LocationConstraint>us-west-2</LocationConstraint>"
                  b"</CreateBucketConfiguration>")
        requests = [
            ("create-bucket", b"PUT / HTTP/1.1\r\n" + host.encode() + b"Content-Length: "
             + str(len(create)).encode() + b"\r\n\r\n" + create),
            ("put-object", b"PUT /key.txt HTTP/1.1\r\n" + host.encode()
             + b"Content-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"),
            ("get-object", b"GET /key.txt HTTP/1.1\r\n" + host.encode() + b"\r\n"),
            ("get-range", b"GET /key.txt HTTP/1.1\r\n" + host.encode() + b"Range: bytes=1-3\r\n\r\n"),
            ("head-object", b"HEAD /key.txt HTTP/1.1\r\n" + host.encode() + b"\r\n"),
            ("list-objects", b"GET /?list-type=2 HTTP/1.1\r\n" + host.encode() + b"\r\n"),
            ("no-such-key", b"GET /missing HTTP/1.1\r\n" + host.encode() + b"\r\n"),
            ("no-such-bucket", b"GET /x HTTP/1.1\r\nHost: absent.s3.us-west-2.amazonaws.com:"
             + str(port).encode() + b"\r\n\r\n"),
            ("delete-object", b"DELETE /key.txt HTTP/1.1\r\n" + host.encode() + b"\r\n"),
            ("expect-continue", b"PUT /big HTTP/1.1\r\n" + host.encode()
             + b"Content-Length: 4\r\nExpect: 100-continue\r\n\r\n"),
        ]
        for name, request in requests:
            with socket.create_connection((LOOPBACK, port), timeout=5) as s:
                s.sendall(request)
                data = b""
                s.settimeout(10.0)  # the first request waits for moto to load its backends
                try:
                    while len(data) < 2048:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                        s.settimeout(1.0)
                except socket.timeout:
                    pass
            if data:
                write("fuzz_http_message", f"resp-moto-{name}", data[:2048])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def write_chunked_examples():
    # RFC 9112 section 7.1: chunked transfer coding (with a chunk extension and a trailer).
    write("fuzz_http_message", "chunked-rfc9112",
          b"4\r\nWiki\r\n6;name=value\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n"
          b"Expires: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n")


# ---- PROXY protocol ---------------------------------------------------------------

HAPROXY_CFG = """
global
    maxconn 100
defaults
    mode tcp
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend v1
    bind 127.0.0.1:{v1}
    bind [::1]:{v1}
    default_backend v1
backend v1
    server s 127.0.0.1:{rec} send-proxy
frontend v2
    bind 127.0.0.1:{v2}
    bind [::1]:{v2}
    default_backend v2
backend v2
    server s 127.0.0.1:{rec} send-proxy-v2
frontend v2tlv
    bind 127.0.0.1:{v2tlv}
    default_backend v2tlv
backend v2tlv
    server s 127.0.0.1:{rec} send-proxy-v2 proxy-v2-options unique-id,crc32c,authority
    unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt
frontend health
    bind 127.0.0.1:{health}
    default_backend health
backend health
    option tcp-check
    server s 127.0.0.1:{rec2} send-proxy-v2 check check-send-proxy inter 300ms
"""


def capture_haproxy():
    if not shutil.which("haproxy"):
        print("  haproxy not found: no PROXY protocol captures")
        return
    rec = Recorder()
    rec2 = Recorder()
    ports = {"v1": free_port(), "v2": free_port(), "v2tlv": free_port(), "health": free_port(),
             "rec": rec.port, "rec2": rec2.port}
    tmp = tempfile.mkdtemp(prefix="seeds-haproxy-")
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(HAPROXY_CFG.format(**ports))
    proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        payload = b"CONNECT media.s3.us-west-2.amazonaws.com:443 HTTP/1.1\r\n\r\n"
        for name, port, family, host in [("v1-tcp4", ports["v1"], socket.AF_INET, LOOPBACK),
                                         ("v1-tcp6", ports["v1"], socket.AF_INET6, "::1"),
                                         ("v2-tcp4", ports["v2"], socket.AF_INET, LOOPBACK),
                                         ("v2-tcp6", ports["v2"], socket.AF_INET6, "::1"),
                                         ("v2-tlvs", ports["v2tlv"], socket.AF_INET, LOOPBACK)]:
            try:
                with socket.socket(family) as s:
                    s.settimeout(3)
                    s.connect((host, port))
                    s.sendall(payload)
                    data = rec.take()
            except OSError as exc:
                print(f"  {name}: {exc}")
                continue
            if data:
                write("fuzz_proxy_protocol", f"haproxy-{name}", data)
        data = rec2.take(timeout=5)
        if data:
            write("fuzz_proxy_protocol", "haproxy-v2-local-health-check", data)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        rec.stop()
        rec2.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def write_nlb_vpce():
    signature = b"\r\n\r\n\x00\r\nQUIT\n"
    addresses = socket.inet_aton("10.0.3.17") + socket.inet_aton("10.0.1.5") + struct.pack(
        "!HH", 51234, 3128)
    vpce = b"\x01" + b"vpce-08d2bf15fac5001c9"
    tlv = b"\xea" + struct.pack("!H", len(vpce)) + vpce
    body = addresses + tlv
    header = signature + b"\x21\x11" + struct.pack("!H", len(body)) + body
    write("fuzz_proxy_protocol", "nlb-v2-vpce", header + b"CONNECT " + BUCKET_HOST.encode()
          + b":443 HTTP/1.1\r\nHost: " + BUCKET_HOST.encode() + b":443\r\n\r\n")


# ---- names, configuration, ClientHellos -------------------------------------------

HOST_NAMES = [
    "media.s3.us-west-2.amazonaws.com",
    "MEDIA.S3.US-WEST-2.AMAZONAWS.COM.",
    "s3.us-west-2.amazonaws.com",
    "s3.amazonaws.com",
    "media.s3.amazonaws.com",
    "s3-us-west-2.amazonaws.com",
    "media.s3-external-1.amazonaws.com",
    "my.dotted.bucket.s3.eu-central-1.amazonaws.com",
    "media.s3.dualstack.eu-west-1.amazonaws.com",
    "media.s3-fips.us-gov-west-1.amazonaws.com",
    "media.s3-fips.dualstack.us-east-2.amazonaws.com",
    "media.s3.cn-north-1.amazonaws.com.cn",
    "finance-123456789012.s3-accesspoint.us-west-2.amazonaws.com",
    "finance-123456789012.s3-accesspoint.dualstack.us-west-2.amazonaws.com",
    "123456789012.s3-control.us-west-2.amazonaws.com",
    "media.s3-accelerate.amazonaws.com",
    "media.s3-accelerate.dualstack.amazonaws.com",
    "mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com",
    "banner-123456789012.s3-object-lambda.us-west-2.amazonaws.com",
    "ap-123456789012.op-01ac5d28a6a232904.s3-outposts.us-west-2.amazonaws.com",
    "media--usw2-az1--x-s3.s3express-usw2-az1.us-west-2.amazonaws.com",
    "s3express-control.us-west-2.amazonaws.com",
    "sts.us-west-2.amazonaws.com",
    "192.168.5.4.s3.us-west-2.amazonaws.com",
    "example.com",
    "localhost",
    "127.0.0.1",
    "0x7f.1",
    "2130706433",
    "[::ffff:127.0.0.1]",
    "::1",
    "a-.example.com",
    "under_score.example.com",
]


def write_host_names():
    for i, name in enumerate(HOST_NAMES):
        write("fuzz_host_name", f"host-{i:02d}", name.encode())


def copy_files():
    shutil.copy(os.path.join(ROOT, "packaging", "s3gate.yaml"),
                os.path.join(CORPUS, "fuzz_config", "packaging-s3gate.yaml"))
    data = os.path.join(ROOT, "test", "data", "clienthello")
    for name in sorted(os.listdir(data)):
        if name.endswith(".bin"):
            shutil.copy(os.path.join(data, name), os.path.join(CORPUS, "fuzz_tls_peek", name))


def main():
    for target in ("fuzz_http_parser", "fuzz_http_message", "fuzz_proxy_protocol",
                   "fuzz_tls_peek", "fuzz_host_name", "fuzz_config"):
        os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    print("curl:")
    capture_curl()
    print("aws:")
    capture_aws()
    print("moto:")
    capture_moto()
    write_chunked_examples()
    print("haproxy:")
    capture_haproxy()
    write_nlb_vpce()
    print("names, configuration, ClientHellos:")
    write_host_names()
    copy_files()


if __name__ == "__main__":
    main()
