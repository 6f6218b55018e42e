#!/usr/bin/env python3
"""Captures real TLS ClientHellos from curl and openssl s_client as test data.

    cd test/data/clienthello && python3 capture.py

A listener on 127.0.0.1 (an ephemeral port) accepts one connection per client,
records the bytes the client sends first (up to the end of its first TLS
handshake message, or 16 KiB, or 3 s), then closes without answering, so the
handshake fails on the client's side; that is expected. The files written:

    curl.bin                    curl --max-time 2 -k https://media.s3.us-west-2.amazonaws.com:PORT/
                                     --resolve media.s3.us-west-2.amazonaws.com:PORT:127.0.0.1
    openssl-s_client.bin        openssl s_client -connect 127.0.0.1:PORT
                                     -servername media.s3.us-west-2.amazonaws.com
    openssl-s_client-nosni.bin  openssl s_client -connect 127.0.0.1:PORT -noservername

test/unit/test_tls_peek.cpp reads them (S3GATE_TEST_DATA/clienthello/*.bin):
the first two must name media.s3.us-west-2.amazonaws.com, the third no server.
The captures differ run to run (random, key shares); any capture will do.
Loopback only; every wait is bounded; each child is ended by its own PID.
"""

import os
import socket
import struct
import subprocess
import sys
import threading
import time

HOST = "media.s3.us-west-2.amazonaws.com"
HERE = os.path.dirname(os.path.abspath(__file__))
LIMIT = 16 * 1024
WAIT = 3.0


def hello_length(data):
    """The bytes needed for the first handshake message (records reassembled), or None
    while the header is not there yet."""
    body = b""
    offset = 0
    for _ in range(64):  # bounded: a ClientHello needs a few records at most
        if len(data) < offset + 5:
            return None
        record_len = struct.unpack("!H", data[offset + 3:offset + 5])[0]
        if len(data) < offset + 5 + record_len:
            return None
        body += data[offset + 5:offset + 5 + record_len]
        offset += 5 + record_len
        if len(body) >= 4:
            need = 4 + int.from_bytes(body[1:4], "big")
            if len(body) >= need:
                return offset
    return offset


def record_first_bytes(listener):
    """Accepts one connection, returns what the client sent first."""
    listener.settimeout(WAIT + 2)
    conn, _ = listener.accept()
    with conn:
        data = b""
        deadline = time.monotonic() + WAIT
        while len(data) < LIMIT:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            conn.settimeout(left)
            try:
                chunk = conn.recv(LIMIT - len(data))
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
            if data[:1] == b"\x16":
                end = hello_length(data)
                if end is not None:
                    return data[:end]
        return data


def capture(name, argv_for_port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        argv = argv_for_port(port)
        result = {}

        def serve():
            try:
                result["data"] = record_first_bytes(listener)
            except OSError as exc:
                result["error"] = exc

        thread = threading.Thread(target=serve)
        thread.start()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                                env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()})
        thread.join(WAIT + 5)
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()  # this child, by its PID
            proc.communicate()
    if "error" in result or not result.get("data"):
        sys.exit(f"{name}: nothing captured from {' '.join(argv)} ({result.get('error')})")
    data = result["data"]
    if data[:1] != b"\x16":
        sys.exit(f"{name}: not a TLS handshake: {data[:16]!r}")
    path = os.path.join(HERE, name)
    with open(path, "wb") as f:
        f.write(data)
    print(f"{name}: {len(data)} bytes from {' '.join(argv)}")


def main():
    capture("curl.bin", lambda port: [
        "curl", "--max-time", "2", "-k", "-s", "-o", "/dev/null",
        f"https://{HOST}:{port}/", "--resolve", f"{HOST}:{port}:127.0.0.1"])
    capture("openssl-s_client.bin", lambda port: [
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", HOST])
    capture("openssl-s_client-nosni.bin", lambda port: [
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-noservername"])


if __name__ == "__main__":
    main()
