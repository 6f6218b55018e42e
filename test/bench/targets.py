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

    def ratio(label, value, base, factor, at_least, fmt, base_name):
        """value against factor x base (at least, or at most)."""
        sign = ">=" if at_least else "<="
        if value is None or not base:
            rows.append((label, "not measured", f"{sign} {factor}x {base_name}", None))
            return
        met = value >= factor * base if at_least else value <= factor * base + 1e-9
        rows.append((label, f"{value:{fmt}} ({value / base:.2f}x)", f"{sign} {factor}x {base:{fmt}}", met))

    def at_most(label, value, bound, fmt):
        rows.append((label, "not measured" if value is None else f"{value:{fmt}}", f"<= {bound}",
                     None if value is None else value <= bound))

    ratio("plain HTTP 64 MiB PUT, MB/s against the best peer", rate("put64m"),
          best_peer_rate(results, "put64m"), 1.5, True, ",.0f", "the best peer")
    ratio("plain HTTP 64 MiB PUT, CPU-s/GiB against the GET's", cpu("put64m"), cpu("get64m"),
          1, False, ".2f", "the GET")
    ratio("tunnel setup, CPU-ms per 1000 (access log on)", cpu("setup"), two_ends(results, "setup"),
          1.1, False, ".1f", "the two ends")
    ratio("latency, proxy CPU-us per round trip", cpu("pingpong"), two_ends(results, "pingpong"),
          1.1, False, ".1f", "the two ends")
    at_most("plain HTTP 1 KiB, CPU-ms per 1000 requests (access log on)", cpu("http1k"), 25, ".1f")
    at_most("upstream-TLS 64 MiB GET, CPU-s/GiB", cpu("utls_get64m"), 0.6, ".2f")
    at_most("upstream-TLS 64 MiB PUT, CPU-s/GiB", cpu("utls_put64m"), 0.6, ".2f")
    at_most("HTTPS-listener tunnel download, CPU-s/GiB", cpu("tlsl_down1"), 0.6, ".2f")
    at_most("inspected 1 GiB download, CPU-s/GiB", cpu("inspect_https1g"), 1.0, ".2f")
    ratio("inspected 1 GiB download, MB/s against a blind tunnel's", rate("inspect_https1g"),
          rate("blind_https1g"), 0.5, True, ",.0f", "a blind tunnel")
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
