"""Metrics and the access log as an operator sees them (SPEC sections 4 and 5).

- the alerting rules pass `promtool check rules` and their own unit tests
  (`promtool test rules`); the Grafana dashboard is valid JSON and names only
  metrics a real scrape of the binary has;
- known traffic through the real binary gives exact counter deltas per label,
  gauges back to 0, histogram counts, and access-log lines that match;
- the scrape passes `promtool check metrics`;
- a real Prometheus server scrapes the admin port and sees the same values,
  evaluates every dashboard expression and loads the alerting rules;
- SIGHUP with a good and a broken file, and SIGTERM with a shutdown delay, move
  the reload counters and the draining gauge;
- s3gate_config_info{sha256} is the SHA-256 of the file's bytes, replaced by a
  good reload and left alone by a rejected one.

promtool and prometheus come from Debian's `prometheus` package; without them
the tests that need them are skipped with the reason printed.
"""

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

import harness as h

REPO = os.path.abspath(os.path.join(h.HERE, "..", ".."))
RULES = os.path.join(REPO, "metrics", "alerts", "s3gate.rules.yaml")
RULES_TEST = os.path.join(REPO, "metrics", "alerts", "s3gate.rules.test.yaml")
DASHBOARD = os.path.join(REPO, "metrics", "dashboards", "s3gate.json")

# Every metric of SPEC section 5 with its type.
SPEC_METRICS = {
    "s3gate_requests_total": "counter",
    "s3gate_denied_total": "counter",
    "s3gate_connections_active": "gauge",
    "s3gate_tunnels_active": "gauge",
    "s3gate_bytes_total": "counter",
    "s3gate_bucket_bytes_total": "counter",
    "s3gate_upstream_connect_duration_seconds": "histogram",
    "s3gate_upstream_errors_total": "counter",
    "s3gate_dns_lookups_total": "counter",
    "s3gate_tunnel_duration_seconds": "histogram",
    "s3gate_config_reloads_total": "counter",
    "s3gate_config_last_reload_successful": "gauge",
    "s3gate_draining": "gauge",
    "s3gate_build_info": "gauge",
    "s3gate_config_info": "gauge",
    "s3gate_auth_total": "counter",
    "s3gate_quota_limited_total": "counter",
    "s3gate_quota_paced_seconds_total": "counter",
}


def tool(name):
    """The path of a Prometheus tool, or None (the caller skips with a printed reason)."""
    return shutil.which(name)


def skip_without(name):
    path = tool(name)
    if path is None:
        reason = f"{name} not found (apt-get install prometheus)"
        print(f"SKIP: {reason}", file=sys.stderr)
        raise unittest.SkipTest(reason)
    return path


# ---------------------------------------------------------------------------
# the Prometheus text format, parsed by hand


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def _unescape(value):
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


class Scrape:
    """One parsed exposition: samples[(name, frozenset(labels.items()))] = value,
    types[family] = type."""

    def __init__(self, text):
        self.text = text
        self.samples = {}
        self.types = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip()
                continue
            m = _SAMPLE.match(line)
            if not m:
                raise AssertionError(f"not a sample line: {line!r}")
            labels = {}
            raw = m.group(2) or ""
            pos = 0
            for _ in range(64):
                if pos >= len(raw):
                    break
                lm = _LABEL.match(raw, pos)
                if not lm:
                    raise AssertionError(f"bad labels in {line!r}")
                labels[lm.group(1)] = _unescape(lm.group(2))
                pos = lm.end()
            key = (m.group(1), frozenset(labels.items()))
            if key in self.samples:
                raise AssertionError(f"duplicate sample {line!r}")
            self.samples[key] = float(m.group(3))

    def names(self):
        return {name for name, _ in self.samples}

    def get(self, name, **labels):
        """The sample's value; 0 when the series does not exist."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def series(self, name):
        """{frozenset(labels): value} of every sample named `name`."""
        return {labels: v for (n, labels), v in self.samples.items() if n == name}


def http_request(port, method, path, timeout=5.0):
    """(status, body) of a plain request to 127.0.0.1:port (no proxy variables involved)."""
    conn = http.client.HTTPConnection(h.LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def scrape(admin_port):
    status, body = http_request(admin_port, "GET", "/metrics")
    if status != 200:
        raise AssertionError(f"GET /metrics answered {status}")
    return Scrape(body.decode("utf-8"))


def diff(before, after, name):
    """{frozenset(labels): delta} of every series of `name` whose value changed."""
    out = {}
    old = before.series(name)
    for labels, value in after.series(name).items():
        d = value - old.get(labels, 0.0)
        if d != 0:
            out[labels] = d
    return out


def L(**labels):
    return frozenset(labels.items())


def dashboard_expressions(dashboard):
    """Every PromQL expression of the dashboard: panel targets and template queries."""
    exprs = []

    def walk_panels(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    exprs.append(t["expr"])
            walk_panels(p.get("panels", []))

    walk_panels(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if var.get("type") == "query" and q:
            exprs.append(q)
    return exprs


def metric_names_in(expr):
    return set(re.findall(r'\b(s3gate_[a-zA-Z0-9_]+)', expr))


def client_hello(server_name):
    """The bytes of a TLS ClientHello naming `server_name` (never sent to a real server)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


# ---------------------------------------------------------------------------
# the rule and dashboard files on their own (no binary needed)


class MonitoringFilesTest(unittest.TestCase):
    def test_promtool_check_rules(self):
        promtool = skip_without("promtool")
        r = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCESS", r.stdout + r.stderr)

    def test_promtool_test_rules(self):
        promtool = skip_without("promtool")
        r = subprocess.run([promtool, "test", "rules", RULES_TEST], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL, cwd=os.path.dirname(RULES_TEST))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_every_alert_is_unit_tested_and_labelled(self):
        with open(RULES) as f:
            rules = f.read()
        with open(RULES_TEST) as f:
            tests = f.read()
        alerts = re.findall(r'^\s*- alert:\s*(\S+)', rules, re.M)
        self.assertGreaterEqual(len(alerts), 8, alerts)
        for alert in alerts:
            self.assertRegex(tests, rf'alertname:\s*{alert}\s*\n\s*exp_alerts:\s*\n\s*- exp_labels',
                             f"no unit test where {alert} fires")
        # every alert block has for, severity and both annotations
        blocks = re.split(r'^\s*- alert:', rules, flags=re.M)[1:]
        for block in blocks:
            name = block.split()[0]
            for key in ("for:", "severity:", "summary:", "description:"):
                self.assertIn(key, block, f"{name} has no {key}")

    def test_config_drift_alert(self):
        with open(RULES) as f:
            rules = f.read()
        blocks = {b.split()[0]: b for b in re.split(r'^\s*- alert:', rules, flags=re.M)[1:]}
        self.assertIn("S3gateConfigDrift", blocks)
        block = blocks["S3gateConfigDrift"]
        self.assertRegex(block, r'expr: count by \(job\) \(count by \(job, sha256\) \(s3gate_config_info\)\) > 1\n')
        self.assertRegex(block, r'\n\s*for: 15m\n')

    def test_dashboard_is_valid(self):
        with open(DASHBOARD) as f:
            dashboard = json.load(f)
        self.assertGreaterEqual(dashboard["schemaVersion"], 36)
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        self.assertEqual(variables["DS_PROMETHEUS"]["type"], "datasource")
        self.assertEqual(variables["DS_PROMETHEUS"]["query"], "prometheus")
        self.assertEqual(variables["instance"]["type"], "query")
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        titles = {p["title"] for p in panels}
        for wanted in ("Traffic by bucket rule", "Requests by kind and decision", "Denials by reason",
                       "Active connections and tunnels", "Upstream connect latency",
                       "Upstream errors by reason", "DNS lookups by result", "Tunnel duration",
                       "Configuration reloads", "Draining", "Build", "Configuration versions",
                       "Instances per configuration", "Configuration by instance",
                       "Proxy authentication", "Quota refusals", "Time paced by quota"):
            self.assertIn(wanted, titles)
        by_title = {p["title"]: p for p in panels}
        # configuration drift across the fleet: the number of distinct digests
        drift = by_title["Configuration versions"]
        self.assertEqual([t["expr"] for t in drift["targets"]],
                         ['count(count by (sha256) (s3gate_config_info{instance=~"$instance"}))'])
        steps = drift["fieldConfig"]["defaults"]["thresholds"]["steps"]
        self.assertEqual([(st["color"], st["value"]) for st in steps], [("green", None), ("red", 2)])
        self.assertIn("count by (sha256) (s3gate_config_info",
                      by_title["Instances per configuration"]["targets"][0]["expr"])
        self.assertIn("by (instance, sha256)",
                      by_title["Configuration by instance"]["targets"][0]["expr"])
        self.assertEqual([t["expr"] for t in by_title["Quota refusals"]["targets"]],
                         ['sum by (quota, reason) (rate(s3gate_quota_limited_total{instance=~"$instance"}'
                          '[$__rate_interval]))'])
        paced = by_title["Time paced by quota"]
        self.assertEqual([t["expr"] for t in paced["targets"]],
                         ['sum by (quota, direction) (rate(s3gate_quota_paced_seconds_total{instance=~"$instance"}'
                          '[$__rate_interval]))'])
        self.assertEqual(paced["fieldConfig"]["defaults"]["unit"], "s")  # seconds waited per second
        self.assertIn("by (result)", by_title["Proxy authentication"]["targets"][0]["expr"])
        required = {r["id"] for r in dashboard["__requires"] if r["type"] == "panel"}
        self.assertEqual({p["type"] for p in panels} - required, set(), "panel types not in __requires")
        ids = [p["id"] for p in dashboard["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are not unique")
        for p in panels:
            self.assertEqual(p["datasource"]["uid"], "${DS_PROMETHEUS}", p["title"])
            self.assertTrue(p["targets"], p["title"])
            for t in p["targets"]:
                self.assertIn('instance=~"$instance"', t["expr"], p["title"])
        exprs = "\n".join(dashboard_expressions(dashboard))
        self.assertIn("histogram_quantile(0.99", exprs)
        self.assertIn("s3gate_upstream_connect_duration_seconds_bucket", exprs)
        for name in SPEC_METRICS:
            if SPEC_METRICS[name] == "histogram":
                name += "_bucket"
            self.assertIn(name, exprs, f"the dashboard does not show {name}")


# ---------------------------------------------------------------------------
# the real binary


class MetricsTest(h.ProxyTestCase):
    def tunnel(self, host, payload, port=None):
        """CONNECT, echo `payload`, close; returns the client name."""
        sock, resp = h.proxy_connect(self.proxy.port, f"{host}:{port or self.echo.port}")
        try:
            self.assertEqual(resp.status, 200, repr(resp))
            if payload:
                self.assertEqual(h.echo_roundtrip(sock, payload), payload)
            sock.shutdown(socket.SHUT_WR)
            rest, how = h.recv_until_eof(sock, 5)
            self.assertEqual((rest, how), (b"", "eof"))
            return h.client_name(sock)
        finally:
            sock.close()

    def refused(self, target, status, details):
        sock, resp = h.proxy_connect(self.proxy.port, target)
        client = h.client_name(sock)
        sock.close()
        self.assertEqual(resp.status, status, repr(resp))
        self.assertEqual(resp.proxy_status().get("details"), details, repr(resp))
        return client

    def wait_idle(self):
        """connections_active and tunnels_active back to 0 (bounded)."""
        def idle():
            s = scrape(self.admin_port)
            return s.get("s3gate_connections_active") == 0 and s.get("s3gate_tunnels_active") == 0
        h.wait_until(idle, 5.0, interval=0.05, message="connections_active and tunnels_active at 0")

    # ------------------------------------------------------------ the exposition itself

    def test_scrape_has_every_spec_metric_and_the_dashboards_names(self):
        # the quota families have children from a quota's first refusal
        self.start_proxy({"quotas": [{"name": "everyone", "requests_per_second": 1}]})
        self.tunnel(h.s3_name("media"), b"x")  # bucket_bytes_total has children from the first tunnel
        statuses = []
        for _ in range(5):  # a burst of one second's worth: a 429 within a few attempts
            sock, resp = h.proxy_connect(self.proxy.port, f"{h.s3_name('media')}:{self.echo.port}")
            sock.close()
            statuses.append(resp.status)
            if resp.status == 429:
                break
        self.assertIn(429, statuses)
        self.wait_idle()
        s = scrape(self.admin_port)
        for name, kind in SPEC_METRICS.items():
            self.assertEqual(s.types.get(name), kind, f"# TYPE of {name}")
        self.assertEqual(len(s.series("s3gate_build_info")), 1)
        (labels, value), = s.series("s3gate_build_info").items()
        self.assertEqual(value, 1)
        self.assertTrue(dict(labels).get("version"), labels)
        self.assertEqual(s.get("s3gate_config_last_reload_successful"), 1)
        self.assertEqual(s.get("s3gate_draining"), 0)

        with open(DASHBOARD) as f:
            dashboard = json.load(f)
        names = s.names()
        referenced = set()
        for expr in dashboard_expressions(dashboard):
            referenced |= metric_names_in(expr)
        self.assertTrue(referenced)
        missing = sorted(referenced - names)
        self.assertEqual(missing, [], "dashboard names metrics the binary does not export")

        with open(RULES) as f:
            rule_names = metric_names_in(f.read())
        self.assertEqual(sorted(rule_names - names), [], "alert rules name unknown metrics")

    def test_promtool_check_metrics(self):
        promtool = skip_without("promtool")
        self.start_proxy()
        self.tunnel(h.s3_name("media"), b"lint")
        self.refused(f"{h.s3_name('secret')}:{self.echo.port}", 403, "bucket_not_allowed")
        self.wait_idle()
        text = scrape(self.admin_port).text
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, f"promtool check metrics:\n{r.stdout}{r.stderr}")
        self.assertEqual((r.stdout + r.stderr).strip(), "", "promtool reported lint problems")

    # ------------------------------------------------------------ exact deltas

    def test_known_traffic_gives_exact_counters_and_log_lines(self):
        self.start_proxy({
            "workers": 1,  # one resolver cache: the second lookup of a name is a cache hit
            "tunnel": {"verify_sni": True},  # echo bytes are not TLS: relayed as they are
            "hosts": [{"name": "sts.us-west-2.amazonaws.com", "ports": [self.echo.port]}],
            "dns": {"pins": [{"host": "*.s3.eu-central-1.amazonaws.com", "addresses": ["127.0.0.1"]}]},
        })
        media = h.s3_name("media")
        self.dns.set_failure(h.s3_name("media", "eu-west-1"), "servfail")
        before = scrape(self.admin_port)

        # allowed tunnels with known byte counts (the echo server returns each byte)
        tunnels = [  # (host, payload, rule, bucket, dns result)
            (media, b"a" * 1000, "media", "media", "resolved"),
            (media, b"b" * 24, "media", "media", "cache_hit"),
            (h.s3_name("ro-archive"), b"c" * 2500, "ro-*", "ro-archive", "resolved"),
            ("sts.us-west-2.amazonaws.com", b"d" * 300, "-", None, "resolved"),
            (h.s3_name("media", "eu-central-1"), b"e" * 77, "media", "media", "pinned"),
        ]
        allowed = []
        for host, payload, rule, bucket, _ in tunnels:
            allowed.append((self.tunnel(host, payload), host, payload, rule, bucket))

        # denials of several reasons (no DNS, no upstream)
        denials = [
            (f"{h.s3_name('secret')}:{self.echo.port}", 403, "bucket_not_allowed"),
            (f"{h.s3_name('other')}:{self.echo.port}", 403, "bucket_not_allowed"),
            (f"example.com:{self.echo.port}", 403, "host_not_allowed"),
            (f"{media}:443", 403, "port_not_allowed"),
            (f"127.0.0.1:{self.echo.port}", 403, "ip_literal_denied"),
            (f"a..b.s3.us-west-2.amazonaws.com:{self.echo.port}", 400, "bad_host"),
        ]
        denied_clients = [(self.refused(t, st, d), t, st, d) for t, st, d in denials]

        # a request head that is not HTTP: a denial, but never a decided request
        resp, garbage_client = h.send_raw(self.proxy.port, b"\x16\x03\x01 not http\r\n\r\n")
        self.assertEqual(resp.status, 400, repr(resp))

        # /ping on the proxy port
        ping = h.http_get(self.proxy.port, "/ping")
        self.assertEqual((ping.status, ping.body), (200, b"OK"))

        # allowed, but failing upstream: DNS failure, connection refused
        dns_client = self.refused(f"{h.s3_name('media', 'eu-west-1')}:{self.echo.port}", 502, "dns_failed")
        refused_client = self.refused(f"{h.s3_name('ro-refused')}:{self.refusing}", 502, "connect_failed")

        self.wait_idle()
        after = scrape(self.admin_port)

        # ---- s3gate_requests_total by kind and decision
        n_allowed = len(tunnels) + 2  # the tunnels and the two upstream failures
        self.assertEqual(diff(before, after, "s3gate_requests_total"), {
            L(kind="connect", decision="allow"): n_allowed,
            L(kind="connect", decision="deny"): len(denials),
            L(kind="local", decision="allow"): 1,
        })
        # ---- s3gate_denied_total by reason
        self.assertEqual(diff(before, after, "s3gate_denied_total"), {
            L(reason="bucket_not_allowed"): 2,
            L(reason="host_not_allowed"): 1,
            L(reason="port_not_allowed"): 1,
            L(reason="ip_literal_denied"): 1,
            L(reason="bad_host"): 1,
            L(reason="bad_request"): 1,
        })
        # ---- bytes: every echoed byte went up and came down
        total = sum(len(p) for _, p, _, _, _ in tunnels)
        self.assertEqual(diff(before, after, "s3gate_bytes_total"),
                         {L(direction="up"): total, L(direction="down"): total})
        by_rule = {}
        for _, payload, rule, _, _ in tunnels:
            by_rule[rule] = by_rule.get(rule, 0) + len(payload)
        expected = {}
        for rule, n in by_rule.items():
            expected[L(rule=rule, direction="up")] = n
            expected[L(rule=rule, direction="down")] = n
        self.assertEqual(diff(before, after, "s3gate_bucket_bytes_total"), expected)
        for (labels, _) in after.series("s3gate_bucket_bytes_total").items():
            self.assertNotIn(dict(labels)["rule"], ("secret", "ro-archive", "other"),
                             "a raw bucket name as a label value")
        # ---- DNS: one lookup per request that reached the resolver step
        results = {}
        for *_, result in tunnels:
            results[result] = results.get(result, 0) + 1
        results["failed"] = 1
        results["resolved"] += 1  # ro-refused
        self.assertEqual(diff(before, after, "s3gate_dns_lookups_total"),
                         {L(result=k): v for k, v in results.items()})
        # ---- upstream errors: the refused port only
        self.assertEqual(diff(before, after, "s3gate_upstream_errors_total"), {L(reason="refused"): 1})
        # ---- histograms: one connect observation per established tunnel, one duration per tunnel
        n_tunnels = len(tunnels)
        for name in ("s3gate_upstream_connect_duration_seconds", "s3gate_tunnel_duration_seconds"):
            self.assertEqual(after.get(name + "_count") - before.get(name + "_count"), n_tunnels, name)
            inf = after.get(name + "_bucket", le="+Inf") - before.get(name + "_bucket", le="+Inf")
            self.assertEqual(inf, n_tunnels, name)
            # every tunnel here took well under a second, connecting included
            added = after.get(name + "_sum") - before.get(name + "_sum")
            self.assertGreater(added, 0, name)
            self.assertLess(added, n_tunnels * 1.0, name)
        # every tunnel here was shorter than the first tunnel bucket (1 s)
        self.assertEqual(after.get("s3gate_tunnel_duration_seconds_bucket", le="1")
                         - before.get("s3gate_tunnel_duration_seconds_bucket", le="1"), n_tunnels)
        # ---- gauges back to rest, nothing else moved
        self.assertEqual(after.get("s3gate_connections_active"), 0)
        self.assertEqual(after.get("s3gate_tunnels_active"), 0)
        self.assertEqual(diff(before, after, "s3gate_config_reloads_total"), {})
        self.assertEqual(after.get("s3gate_draining"), 0)

        # ---- the access log says the same
        log_bytes_up = 0
        for client, host, payload, rule, bucket in allowed:
            rec = self.proxy.log_for_client(client)
            self.assert_log(rec, kind="connect", method="CONNECT", host=host, port=self.echo.port,
                            bucket=bucket, rule=rule, decision="allow", reason=None, status=200,
                            upstream=f"127.0.0.1:{self.echo.port}", bytes_up=len(payload),
                            bytes_down=len(payload), close="client_eof")
            log_bytes_up += rec["bytes_up"]
        self.assertEqual(log_bytes_up, total)
        for client, _target, status, details in denied_clients:
            rec = self.proxy.log_for_client(client)
            self.assert_log(rec, kind="connect", method="CONNECT", decision="deny", reason=details,
                            status=status, bytes_up=0, bytes_down=0)
        rec = self.proxy.log_for_client(garbage_client)
        self.assert_log(rec, decision="deny", reason="bad_request", status=400)
        rec = self.proxy.wait_for_log(lambda r: r.get("kind") == "local", message="the /ping line")
        self.assert_log(rec, kind="local", method="GET", decision="allow", reason=None, status=200)
        rec = self.proxy.log_for_client(dns_client)
        self.assert_log(rec, kind="connect", decision="allow", reason="dns_failed", status=502,
                        upstream=None, bytes_up=0, bytes_down=0)
        rec = self.proxy.log_for_client(refused_client)
        self.assert_log(rec, kind="connect", decision="allow", reason="connect_failed", status=502,
                        rule="ro-*", bytes_up=0, bytes_down=0)
        # the sum of bytes_up over every tunnel line is what the counter says
        lines = [r for r in self.proxy.access_lines() if r.get("status") == 200 and r.get("kind") == "connect"]
        self.assertEqual(len(lines), n_tunnels)
        self.assertEqual(sum(r["bytes_up"] for r in lines),
                         after.get("s3gate_bytes_total", direction="up")
                         - before.get("s3gate_bytes_total", direction="up"))
        self.assert_settled()

    def sni_mismatch_tunnel(self):
        """CONNECT media (allowed), then a ClientHello naming another bucket: the
        tunnel is closed. Returns (client name, ClientHello length)."""
        sock, resp = h.proxy_connect(self.proxy.port, f"{h.s3_name('media')}:{self.echo.port}")
        try:
            self.assertEqual(resp.status, 200, repr(resp))
            hello = client_hello(h.s3_name("secret"))
            with contextlib.suppress(OSError):
                sock.sendall(hello)
            _, how = h.recv_until_eof(sock, 5)
            self.assertIn(how, ("eof", "reset"))
            return h.client_name(sock), len(hello)
        finally:
            sock.close()

    def test_bytes_of_an_open_tunnel_are_counted_while_it_runs(self):
        # A long transfer shows in the byte counters as it goes (every second),
        # not in one step when its tunnel closes; the total stays exact.
        self.start_proxy({"workers": 1})
        media = h.s3_name("media")
        before = scrape(self.admin_port)
        sock, resp = h.proxy_connect(self.proxy.port, f"{media}:{self.echo.port}")
        try:
            self.assertEqual(resp.status, 200, repr(resp))
            payload = b"m" * 300000
            self.assertEqual(h.echo_roundtrip(sock, payload), payload)

            def counted():
                s = scrape(self.admin_port)
                return (s.get("s3gate_bytes_total", direction="up") -
                        before.get("s3gate_bytes_total", direction="up")) == len(payload)

            h.wait_until(counted, 3.0, interval=0.1, message="the open tunnel's bytes in s3gate_bytes_total")
            mid = scrape(self.admin_port)
            self.assertEqual(mid.get("s3gate_tunnels_active"), 1, "the tunnel is still open")
            self.assertEqual(mid.get("s3gate_bucket_bytes_total", rule="media", direction="down")
                             - before.get("s3gate_bucket_bytes_total", rule="media", direction="down"),
                             len(payload))
            self.assertEqual(h.echo_roundtrip(sock, b"tail"), b"tail")
            sock.shutdown(socket.SHUT_WR)
            self.assertEqual(h.recv_until_eof(sock, 5), (b"", "eof"))
        finally:
            sock.close()
        self.wait_idle()
        after = scrape(self.admin_port)
        for direction in ("up", "down"):
            self.assertEqual(after.get("s3gate_bytes_total", direction=direction)
                             - before.get("s3gate_bytes_total", direction=direction), 300004, direction)

    def test_sni_mismatch_counts(self):
        self.start_proxy({"tunnel": {"verify_sni": True}})
        before = scrape(self.admin_port)
        client, _ = self.sni_mismatch_tunnel()
        self.wait_idle()
        after = scrape(self.admin_port)
        # allowed at CONNECT, denied once the ClientHello was seen: the final decision counts
        self.assertEqual(diff(before, after, "s3gate_requests_total"),
                         {L(kind="connect", decision="deny"): 1})
        self.assertEqual(diff(before, after, "s3gate_denied_total"), {L(reason="sni_mismatch"): 1})
        self.assertEqual(diff(before, after, "s3gate_dns_lookups_total"), {L(result="resolved"): 1})
        for name in ("s3gate_upstream_connect_duration_seconds", "s3gate_tunnel_duration_seconds"):
            self.assertEqual(after.get(name + "_count") - before.get(name + "_count"), 1, name)
        self.assertEqual(diff(before, after, "s3gate_bytes_total").get(L(direction="down"), 0), 0)
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, kind="connect", decision="deny", reason="sni_mismatch", status=200,
                        rule="media", bytes_down=0, close="sni_mismatch")
        self.assert_settled()

    # The ClientHello of a tunnel closed for sni_mismatch is never relayed, so it
    # counts nowhere (SPEC section 4: bytes_up counts what was relayed).
    def test_sni_mismatch_bytes_not_counted(self):
        self.start_proxy({"tunnel": {"verify_sni": True}})
        before = scrape(self.admin_port)
        client, hello_length = self.sni_mismatch_tunnel()
        self.assertGreater(hello_length, 0)
        self.wait_idle()
        after = scrape(self.admin_port)
        rec = self.proxy.log_for_client(client)
        self.assertEqual(self.echo.wait_done()[-1]["bytes_in"], 0, "the upstream got the ClientHello")
        self.assertEqual((rec["bytes_up"], rec["bytes_down"]), (0, 0), rec)
        self.assertEqual(diff(before, after, "s3gate_bytes_total"), {})
        self.assertEqual(diff(before, after, "s3gate_bucket_bytes_total"), {})

    def test_admin_requests_are_not_counted(self):
        self.start_proxy()
        before = scrape(self.admin_port)
        for _ in range(3):
            self.assertEqual(http_request(self.admin_port, "GET", "/ping"), (200, b"OK"))
            scrape(self.admin_port)
        after = scrape(self.admin_port)
        self.assertEqual(diff(before, after, "s3gate_requests_total"), {})
        self.assertEqual(after.get("s3gate_connections_active"), 0)
        self.assertEqual(self.proxy.access_lines(), [])

    # ------------------------------------------------------------ a real Prometheus

    def test_real_prometheus_scrapes_the_same_values(self):
        prometheus = skip_without("prometheus")
        self.start_proxy()
        self.tunnel(h.s3_name("media"), b"p" * 123)
        self.refused(f"{h.s3_name('secret')}:{self.echo.port}", 403, "bucket_not_allowed")
        self.assertEqual(h.http_get(self.proxy.port, "/ping").status, 200)
        self.wait_idle()
        expected = scrape(self.admin_port)

        prom = PrometheusServer(prometheus, self.workdir, self.admin_port, rule_files=[RULES])
        self.addCleanup(prom.stop)
        prom.start()
        prom.wait_scraped(f"127.0.0.1:{self.admin_port}")

        result = prom.query("s3gate_requests_total")
        got = {}
        for item in result:
            labels = dict(item["metric"])
            self.assertEqual(labels.pop("job"), "s3gate")
            self.assertEqual(labels.pop("instance"), f"127.0.0.1:{self.admin_port}")
            labels.pop("__name__")
            got[frozenset(labels.items())] = float(item["value"][1])
        self.assertEqual(got, expected.series("s3gate_requests_total"))
        self.assertEqual(got[L(kind="connect", decision="allow")], 1)
        self.assertEqual(got[L(kind="connect", decision="deny")], 1)
        self.assertEqual(got[L(kind="local", decision="allow")], 1)
        bucket = prom.query('s3gate_bucket_bytes_total{rule="media",direction="down"}')
        self.assertEqual([float(i["value"][1]) for i in bucket], [123.0])

        # every dashboard expression is valid PromQL and, traffic having been sent, returns data
        with open(DASHBOARD) as f:
            dashboard = json.load(f)
        for expr in dashboard_expressions(dashboard):
            q = expr.replace("$__rate_interval", "1m").replace("$instance", ".+")
            q = re.sub(r'label_values\((\w+),\s*\w+\)', r'\1', q)  # a Grafana function
            prom.query(q)  # raises on a bad expression
        build = prom.query('count by (version) (s3gate_build_info{instance=~".+"})')
        self.assertEqual(len(build), 1)
        # one instance, one configuration: its file's digest
        versions = prom.query('count(count by (sha256) (s3gate_config_info))')
        self.assertEqual([float(i["value"][1]) for i in versions], [1.0])
        info = prom.query('s3gate_config_info')
        self.assertEqual([i["metric"]["sha256"] for i in info], [self.config_digest()])

        # the alerting rules load and evaluate without error; nothing fires on a healthy instance
        def rules_evaluated():
            groups = prom.api("/api/v1/rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            if not rules or any(r.get("lastEvaluation", "").startswith("0001") for r in rules):
                return None
            return rules

        rules = h.wait_until(rules_evaluated, 15, interval=0.2, message="the rules to be evaluated")
        with open(RULES) as f:
            self.assertEqual(len(rules), len(re.findall(r'^\s*- alert:', f.read(), re.M)))
        for r in rules:
            self.assertEqual(r["health"], "ok", r)
            if r["name"] != "S3gateAbsent":  # it needs up{job="s3gate"}: present here
                self.assertEqual(r["state"], "inactive", r)
        self.assertEqual(prom.stop(), 0, "prometheus did not exit cleanly")

    # ------------------------------------------------------------ reloads and draining

    def test_reloads_count_success_and_failure(self):
        self.start_proxy()
        new_bucket = h.s3_name("fresh")
        self.refused(f"{new_bucket}:{self.echo.port}", 403, "bucket_not_allowed")
        s = scrape(self.admin_port)
        self.assertEqual(s.get("s3gate_config_reloads_total", result="success"), 0)
        self.assertEqual(s.get("s3gate_config_reloads_total", result="failure"), 0)
        self.assertEqual(s.get("s3gate_config_last_reload_successful"), 1)

        # a valid file: success +1, and the new rule is in force
        cfg = dict(self.proxy.config)
        cfg["buckets"] = cfg["buckets"] + [{"name": "fresh"}]
        self.proxy.write_config(cfg)
        self.proxy.signal(signal.SIGHUP)
        h.wait_until(lambda: scrape(self.admin_port).get("s3gate_config_reloads_total", result="success") == 1,
                     5, message="reloads_total{result=success} to reach 1")
        s = scrape(self.admin_port)
        self.assertEqual(s.get("s3gate_config_reloads_total", result="failure"), 0)
        self.assertEqual(s.get("s3gate_config_last_reload_successful"), 1)
        self.tunnel(new_bucket, b"new rule")

        # a broken file: failure +1, last_reload_successful 0, the old configuration stays
        with open(self.proxy.config_path, "a") as f:
            f.write("buckets_typo: [\n")
        self.proxy.signal(signal.SIGHUP)
        h.wait_until(lambda: scrape(self.admin_port).get("s3gate_config_reloads_total", result="failure") == 1,
                     5, message="reloads_total{result=failure} to reach 1")
        s = scrape(self.admin_port)
        self.assertEqual(s.get("s3gate_config_reloads_total", result="success"), 1)
        self.assertEqual(s.get("s3gate_config_last_reload_successful"), 0)
        self.assertTrue(self.proxy.alive())
        client = self.tunnel(new_bucket, b"still served")
        rec = self.proxy.log_for_client(client)
        self.assert_log(rec, decision="allow", rule="fresh", bytes_up=12, bytes_down=12)
        self.refused(f"{h.s3_name('secret')}:{self.echo.port}", 403, "bucket_not_allowed")
        self.assertEqual(http_request(self.admin_port, "GET", "/ping"), (200, b"OK"))

        # a good file again: the gauge recovers
        self.proxy.write_config(cfg)
        self.proxy.signal(signal.SIGHUP)
        h.wait_until(lambda: scrape(self.admin_port).get("s3gate_config_last_reload_successful") == 1,
                     5, message="last_reload_successful back to 1")
        s = scrape(self.admin_port)
        self.assertEqual(s.get("s3gate_config_reloads_total", result="success"), 2)
        self.assertEqual(s.get("s3gate_config_reloads_total", result="failure"), 1)
        self.assert_settled()

    def config_digest(self):
        with open(self.proxy.config_path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def config_info(self):
        """{sha256: value} of every s3gate_config_info series."""
        return {dict(labels).get("sha256"): value
                for labels, value in scrape(self.admin_port).series("s3gate_config_info").items()}

    def test_config_info_is_the_digest_of_the_file_and_follows_good_reloads(self):
        self.start_proxy()
        first = self.config_digest()
        self.assertEqual(self.config_info(), {first: 1.0})

        # the same settings in other bytes (a comment) are another digest
        with open(self.proxy.config_path, "ab") as f:
            f.write(b"# reviewed\r\n")
        second = self.config_digest()
        self.assertNotEqual(second, first)
        self.proxy.signal(signal.SIGHUP)
        h.wait_until(lambda: self.config_info() == {second: 1.0}, 5,
                     message=f"s3gate_config_info to be {{sha256={second!r}}} alone")
        self.assertEqual(scrape(self.admin_port).get("s3gate_config_reloads_total", result="success"), 1)

        # a rejected reload leaves the running configuration's digest
        with open(self.proxy.config_path, "ab") as f:
            f.write(b"buckets_typo: [\n")
        self.assertNotEqual(self.config_digest(), second)
        self.proxy.signal(signal.SIGHUP)
        h.wait_until(lambda: scrape(self.admin_port).get("s3gate_config_reloads_total", result="failure") == 1,
                     5, message="reloads_total{result=failure} to reach 1")
        self.assertEqual(self.config_info(), {second: 1.0})

        # the first file again: its digest, one series
        self.proxy.write_config(self.proxy.config)
        self.assertEqual(self.config_digest(), first)
        self.proxy.signal(signal.SIGHUP)
        h.wait_until(lambda: scrape(self.admin_port).get("s3gate_config_reloads_total", result="success") == 2,
                     5, message="reloads_total{result=success} to reach 2")
        self.assertEqual(self.config_info(), {first: 1.0})

    def test_draining_gauge_after_sigterm(self):
        self.start_proxy({"limits": {"shutdown_delay": "2s"}})
        self.assertEqual(scrape(self.admin_port).get("s3gate_draining"), 0)
        self.assertEqual(http_request(self.admin_port, "GET", "/ping"), (200, b"OK"))
        t0 = time.monotonic()
        self.proxy.signal(signal.SIGTERM)
        h.wait_until(lambda: scrape(self.admin_port).get("s3gate_draining") == 1, 1.5,
                     message="s3gate_draining to become 1")
        status, body = http_request(self.admin_port, "GET", "/ping")
        self.assertEqual(status, 503, body)
        # still serving on the proxy port during shutdown_delay; its /ping says 503 too
        ping = h.http_get(self.proxy.port, "/ping")
        self.assertEqual(ping.status, 503, repr(ping))
        self.assertLess(time.monotonic() - t0, 2.0, "the checks above ran after shutdown_delay")
        self.assertTrue(self.proxy.alive())
        self.proxy.proc.wait(10)
        self.assertEqual(self.proxy.proc.returncode, 0, self.proxy.stderr()[-2000:])
        self.assertGreaterEqual(time.monotonic() - t0, 1.9, "exited before shutdown_delay")


class PrometheusServer:
    """/usr/bin/prometheus on 127.0.0.1 (a free port, a temporary TSDB) scraping
    one s3gate admin port every second. Stopped by its own PID."""

    def __init__(self, binary, workdir, admin_port, rule_files=()):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="prometheus-", dir=workdir)
        self.port = h.free_port()
        self.config_path = os.path.join(self.dir, "prometheus.yml")
        self.log_path = os.path.join(self.dir, "prometheus.log")
        rules = "".join(f"  - {json.dumps(r)}\n" for r in rule_files)
        with open(self.config_path, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  scrape_timeout: 1s\n"
                    + (f"rule_files:\n{rules}" if rules else "")
                    + "scrape_configs:\n  - job_name: s3gate\n    static_configs:\n"
                    + f"      - targets: [\"127.0.0.1:{admin_port}\"]\n")
        self.proc = None
        self._log = None

    def start(self):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.config_path}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=h.clean_env(), cwd=self.dir)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                return http_request(self.port, "GET", "/-/ready", timeout=1)[0] == 200
            return False

        h.wait_until(ready, 30, interval=0.1, message="prometheus to be ready")

    def api(self, path):
        status, body = http_request(self.port, "GET", path, timeout=5)
        doc = json.loads(body)
        if status != 200 or doc.get("status") != "success":
            raise AssertionError(f"prometheus {path}: {status} {body[:500]!r}")
        return doc["data"]

    def query(self, expr):
        data = self.api("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        return data["result"]

    def wait_scraped(self, instance, timeout=20):
        """Until the target was scraped successfully at least once (up == 1)."""
        def up():
            r = self.query(f'up{{job="s3gate",instance="{instance}"}}')
            return bool(r) and r[0]["value"][1] == "1"
        try:
            h.wait_until(up, timeout, interval=0.2, message="a successful scrape of s3gate")
        except AssertionError:
            raise AssertionError(f"no successful scrape; targets: "
                                 f"{self.api('/api/v1/targets')}\nlog:\n{self.log()}")

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-3000:]

    def stop(self):
        """SIGTERM to our PID, SIGKILL after 10 s. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode


if __name__ == "__main__":
    unittest.main()
