#!/usr/bin/env python3
"""The performance targets, read from one benchmark run's results.

    python3 test/bench/targets.py [RESULTS.json] [--column s3gate-w1]

RESULTS.json is what test/bench/run.py wrote (default: test/bench/results/last.json).
Each target is a ratio or a bound within that one run; the table says the
measured value, the bound it is held to, and whether it is met. A workload the
run did not measure is reported as such. Nothing here is timed: the figures are
the run's medians, as run.py printed them.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = ("squid", "tinyproxy")


def median(results, workload, proxy):
    """The median dict of one workload and proxy, or None when not measured."""
    entry = results.get("workloads", {}).get(workload, {}).get(proxy)
    if not isinstance(entry, dict):
        return None
    return entry.get("median")


def two_ends(results, workload):
    """CPU of the load generator's own client and server without a proxy."""
    m = median(results, workload, "none")
    if not m or m.get("client_cpu") is None or m.get("server_cpu") is None:
        return None
    return m["client_cpu"] + m["server_cpu"]


def best_peer_rate(results, workload):
    rates = [m["value"] for m in (median(results, workload, p) for p in PEERS) if m and m.get("value")]
    return max(rates) if rates else None


def targets(results, column):
    """[(target, measured text, bound text, met or None)]"""
    rows = []

    def cpu(workload):
        m = median(results, workload, column)
        return None if not m else m.get("cpu")

    def rate(workload):
        m = median(results, workload, column)
        return None if not m else m.get("value")

    # plain HTTP 64 MiB PUT: >= 1.5x the best peer's MB/s, <= the GET's CPU per GiB
    put_rate, peer = rate("put64m"), best_peer_rate(results, "put64m")
    if put_rate is not None and peer:
        rows.append(("plain HTTP 64 MiB PUT, MB/s against the best peer",
                     f"{put_rate:,.0f} ({put_rate / peer:.2f}x)", f">= 1.5x {peer:,.0f}",
                     put_rate >= 1.5 * peer))
    else:
        rows.append(("plain HTTP 64 MiB PUT, MB/s against the best peer", "not measured", ">= 1.5x", None))
    put_cpu, get_cpu = cpu("put64m"), cpu("get64m")
    if put_cpu is not None and get_cpu is not None:
        rows.append(("plain HTTP 64 MiB PUT, CPU-s/GiB against the GET's", f"{put_cpu:.2f}",
                     f"<= {get_cpu:.2f}", put_cpu <= get_cpu + 1e-9))
    else:
        rows.append(("plain HTTP 64 MiB PUT, CPU-s/GiB against the GET's", "not measured", "<= GET", None))

    def against_ends(label, workload, factor=1.1):
        value, ends = cpu(workload), two_ends(results, workload)
        if value is None or ends is None:
            rows.append((label, "not measured", f"<= {factor}x the two ends", None))
            return
        rows.append((label, f"{value:.1f} ({value / ends:.2f}x)",
                     f"<= {factor}x {ends:.1f}", value <= factor * ends))

    against_ends("tunnel setup, CPU-ms per 1000 (access log on)", "setup")
    against_ends("latency, proxy CPU-us per round trip", "pingpong")

    value = cpu("http1k")
    rows.append(("plain HTTP 1 KiB, CPU-ms per 1000 requests (access log on)",
                 "not measured" if value is None else f"{value:.1f}", "<= 25",
                 None if value is None else value <= 25))

    for workload, label in (("utls_get64m", "upstream-TLS 64 MiB GET, CPU-s/GiB"),
                            ("utls_put64m", "upstream-TLS 64 MiB PUT, CPU-s/GiB"),
                            ("tlsl_down1", "HTTPS-listener tunnel download, CPU-s/GiB")):
        value = cpu(workload)
        rows.append((label, "not measured" if value is None else f"{value:.2f}", "<= 0.6",
                     None if value is None else value <= 0.6))

    value = cpu("inspect_https1g")
    rows.append(("inspected 1 GiB download, CPU-s/GiB", "not measured" if value is None else f"{value:.2f}",
                 "<= 1.0", None if value is None else value <= 1.0))
    inspected, blind = rate("inspect_https1g"), rate("blind_https1g")
    if inspected is not None and blind:
        rows.append(("inspected 1 GiB download, MB/s against a blind tunnel's",
                     f"{inspected:,.0f} ({inspected / blind:.2f}x)", f">= 0.5x {blind:,.0f}",
                     inspected >= 0.5 * blind))
    else:
        rows.append(("inspected 1 GiB download, MB/s against a blind tunnel's", "not measured", ">= 0.5x", None))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", default=os.path.join(HERE, "results", "last.json"))
    ap.add_argument("--column", default="s3gate-w1", help="the proxy column held to the targets")
    args = ap.parse_args()
    with open(args.results) as f:
        results = json.load(f)
    if args.column not in results.get("proxies", {}) and not any(
            args.column in w for w in results.get("workloads", {}).values()):
        print(f"targets.py: {args.results} has no column {args.column}", file=sys.stderr)
        return 2
    rows = targets(results, args.column)
    print(f"Targets, {args.column}, from {os.path.relpath(args.results)}:")
    print()
    print("| target | measured | bound | met |")
    print("|---|---|---|---|")
    for label, measured, bound, met in rows:
        verdict = "n/a" if met is None else ("yes" if met else "**no**")
        print(f"| {label} | {measured} | {bound} | {verdict} |")
    measured = [m for *_, m in rows if m is not None]
    print()
    print(f"{sum(measured)} of {len(measured)} measured targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
