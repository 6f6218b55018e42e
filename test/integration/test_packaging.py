"""What goes on a host (SPEC section 6): builds the DEB and the RPM with
`cmake --build BUILD --target package`, then only inspects them. Nothing is
installed on this machine and no service is started: the .deb is unpacked
into a throwaway directory, and the installed binary checks the installed
configuration there. Also checks the unit with systemd-analyze (security
rating and verify), the man page with man --warnings, and the .deb with lintian.

BUILD is the directory of $S3GATE_BIN. A tool that is missing skips the tests
that need it, with the reason printed."""

import glob
import gzip
import os
import platform
import re
import shutil
import subprocess
import tempfile
import unittest

BIN = os.path.abspath(os.environ.get("S3GATE_BIN", "../../build/s3gate"))
BUILD = os.path.dirname(BIN)
SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

CONFIG = "/etc/s3gate/s3gate.yaml"
DOC = "/usr/share/doc/s3gate"
MAX_CONNECTIONS = 20000  # the default of limits.max_connections
SECURITY_TARGET = 2.0  # systemd-analyze security: "OK" and better
PACKAGE_TIMEOUT = 480  # seconds; the build itself is already done by then


def run(args, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(args, check=False, **kw)


def cache_value(name):
    """A value from BUILD/CMakeCache.txt, or None."""
    try:
        with open(os.path.join(BUILD, "CMakeCache.txt"), encoding="utf-8") as f:
            for line in f:
                m = re.match(rf"^{re.escape(name)}:[A-Z]+=(.*)$", line.rstrip("\n"))
                if m:
                    return m.group(1)
    except OSError:
        pass
    return None


def need(*tools):
    """Skips the test when one of `tools` is not on PATH."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise unittest.SkipTest(f"{', '.join(missing)} not found (install-build-deps.sh installs it)")


def unit_value(text, key):
    """Every value assigned to `key` in the unit text, in order."""
    return [m.group(1).strip() for m in re.finditer(rf"^{re.escape(key)}=(.*)$", text, re.M)]


class PackagingTest(unittest.TestCase):
    deb = None
    rpm = None
    root = None  # the .deb unpacked

    @classmethod
    def setUpClass(cls):
        if cache_value("S3GATE_SANITIZE") in ("ON", "TRUE", "1", "YES"):
            raise unittest.SkipTest("a sanitizer build: packages are made and checked from the normal build")
        if not os.path.exists(os.path.join(BUILD, "CPackConfig.cmake")):
            raise AssertionError(f"{BUILD} has no CPackConfig.cmake: is add_subdirectory(packaging) missing?")
        need("cmake")
        if shutil.which("scdoc") is None:
            raise unittest.SkipTest("scdoc not found: the build refuses to make packages without the man page")
        cls.version = run([BIN, "--version"]).stdout.split()[-1]
        deb_arch = run(["dpkg", "--print-architecture"]).stdout.strip() if shutil.which("dpkg") else "amd64"
        cls.deb_path = os.path.join(BUILD, f"s3gate_{cls.version}_{deb_arch}.deb")
        cls.rpm_path = os.path.join(BUILD, f"s3gate-{cls.version}-1.{platform.machine()}.rpm")
        for stale in (cls.deb_path, cls.rpm_path):
            if os.path.exists(stale):
                os.remove(stale)
        built = run(["cmake", "--build", BUILD, "--target", "package"], timeout=PACKAGE_TIMEOUT)
        if built.returncode != 0:
            raise AssertionError(f"cmake --build {BUILD} --target package failed:\n"
                                 f"{built.stdout[-4000:]}\n{built.stderr[-4000:]}")
        cls.package_output = built.stdout + built.stderr
        cls.deb = cls.deb_path if os.path.exists(cls.deb_path) else None
        cls.rpm = cls.rpm_path if os.path.exists(cls.rpm_path) else None
        cls.tmp = tempfile.TemporaryDirectory(prefix="s3gate-pkg-")
        if cls.deb and shutil.which("dpkg-deb"):
            cls.root = os.path.join(cls.tmp.name, "root")
            os.mkdir(cls.root)
            unpacked = run(["dpkg-deb", "-x", cls.deb, cls.root])
            if unpacked.returncode != 0:
                raise AssertionError(f"dpkg-deb -x failed: {unpacked.stderr}")

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "tmp", None):
            cls.tmp.cleanup()

    # ------------------------------------------------------------------ helpers

    def need_deb(self):
        need("dpkg-deb")
        self.assertIsNotNone(self.deb, f"the package target made no {self.deb_path}")

    def need_rpm(self):
        need("rpm", "rpmbuild")
        self.assertIsNotNone(self.rpm, f"the package target made no {self.rpm_path}")

    def in_root(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def unit_path(self):
        found = glob.glob(os.path.join(self.root, "**", "systemd", "system", "s3gate.service"), recursive=True)
        self.assertEqual(len(found), 1, f"one s3gate.service expected in the .deb, found {found}")
        return found[0]

    def unit_text(self):
        with open(self.unit_path(), encoding="utf-8") as f:
            return f.read()

    def rpm_query(self, *what):
        out = run(["rpm", "-qp", *what, self.rpm])
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout

    # ---------------------------------------------------------------- the .deb

    def test_deb_file_list(self):
        self.need_deb()
        listing = run(["dpkg-deb", "-c", self.deb]).stdout
        entries = {}
        for line in listing.splitlines():
            fields = line.split()
            entries[fields[-1].lstrip(".").rstrip("/") or "/"] = (fields[0], fields[1])
        for path in ("/usr/sbin/s3gate", CONFIG, "/usr/share/man/man8/s3gate.8.gz",
                     f"{DOC}/README.md", f"{DOC}/copyright", f"{DOC}/changelog.gz",
                     f"{DOC}/examples/low-ports.conf", "/etc/logrotate.d/s3gate"):
            self.assertIn(path, entries, f"{path} missing from the .deb:\n{listing}")
            self.assertEqual(entries[path][1], "root/root", f"{path} not owned by root")
        self.assertEqual(entries["/usr/sbin/s3gate"][0], "-rwxr-xr-x")
        self.assertEqual(entries[CONFIG][0], "-rw-r--r--")
        units = [p for p in entries if p.endswith("/systemd/system/s3gate.service")]
        self.assertEqual(len(units), 1, listing)
        unit_dir = os.path.dirname(units[0])
        expected_dir = run(["pkg-config", "--variable=systemdsystemunitdir", "systemd"]).stdout.strip() \
            if shutil.which("pkg-config") else ""
        self.assertEqual(unit_dir, expected_dir or "/lib/systemd/system")
        # The binary is stripped, and the man page is the one built here.
        with gzip.open(self.in_root("/usr/share/man/man8/s3gate.8.gz"), "rt", encoding="utf-8") as f:
            page = f.read()
        self.assertIn(".TH", page)
        self.assertNotIn("@S3GATE_", page)

    def test_deb_control(self):
        self.need_deb()
        control = os.path.join(self.tmp.name, "control")
        shutil.rmtree(control, ignore_errors=True)
        out = run(["dpkg-deb", "-e", self.deb, control])
        self.assertEqual(out.returncode, 0, out.stderr)
        with open(os.path.join(control, "conffiles"), encoding="utf-8") as f:
            conffiles = f.read().split()
        self.assertIn(CONFIG, conffiles)
        for script in ("postinst", "prerm", "postrm"):
            path = os.path.join(control, script)
            self.assertTrue(os.access(path, os.X_OK), f"{script} missing or not executable")
            self.assertEqual(run(["sh", "-n", path]).returncode, 0, f"{script}: shell syntax")
        with open(os.path.join(control, "postinst"), encoding="utf-8") as f:
            postinst = f.read()
        self.assertRegex(postinst, r"adduser --system --group --no-create-home")
        self.assertRegex(postinst, r"deb-systemd-helper .*enable s3gate\.service")
        self.assertNotRegex(postinst, r"deb-systemd-invoke (start|restart) ",
                            "postinst must not start the service on a first install")
        with open(os.path.join(control, "postrm"), encoding="utf-8") as f:
            postrm = f.read()
        self.assertRegex(postrm, r'"\$1" = "purge"')
        self.assertIn("/var/log/s3gate", postrm)

        fields = run(["dpkg-deb", "-f", self.deb, "Package", "Version", "Depends"]).stdout
        self.assertIn("Package: s3gate", fields)
        self.assertIn(f"Version: {self.version}", fields)
        depends = re.search(r"^Depends: (.*)$", fields, re.M)
        self.assertIsNotNone(depends, fields)
        # Computed by dpkg-shlibdeps, not written by hand.
        for dep in ("adduser", "libc6", "libevent-core", "libyaml-cpp", "libc-ares"):
            self.assertIn(dep, depends.group(1))

    def test_installed_binary_checks_installed_config(self):
        self.need_deb()
        binary = self.in_root("/usr/sbin/s3gate")
        config = self.in_root(CONFIG)
        out = run([binary, "-c", config, "--check"])
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual(out.stdout.strip(), "configuration OK")
        out = run([binary, "--version"])
        self.assertEqual(out.stdout.strip(), f"s3gate {self.version}")
        # The example answers for the deployment it describes.
        out = run([binary, "-c", config, "explain", "10.20.1.5", "CONNECT",
                   "studio-media.s3.us-west-2.amazonaws.com:443"])
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        out = run([binary, "-c", config, "explain", "10.20.1.5", "CONNECT",
                   "other-bucket.s3.us-west-2.amazonaws.com:443"])
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertIn("bucket_not_allowed", out.stdout)

    def test_config_commented_examples_are_valid(self):
        """An operator who uncomments the examples gets a file that loads."""
        self.need_deb()
        with open(self.in_root(CONFIG), encoding="utf-8") as f:
            text = f.read()
        with open(self.in_root(CONFIG), encoding="utf-8") as f:
            self.assertIn("access_log: /var/log/s3gate/access.log", f.read())
        uncommented = text
        for pattern, repl in ((r"^(\s*)# (proxy_protocol: true)$", r"\1\2"),
                              (r"^# (trusted_proxies: .*)$", r"\1"),
                              (r"^(\s*)# (allowed_networks:)$", r"\1\2"),
                              (r'^(\s*)#( +- "[0-9./]+")$', r"\1\2")):
            uncommented, n = re.subn(pattern, repl, uncommented, flags=re.M)
            self.assertGreater(n, 0, f"no commented example matches {pattern}")
        path = os.path.join(self.tmp.name, "uncommented.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(uncommented)
        out = run([BIN, "-c", path, "--check"])
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_lintian(self):
        self.need_deb()
        need("lintian")
        out = run(["lintian", "--display-info", self.deb], timeout=300)
        print(f"\nlintian:\n{out.stdout}{out.stderr}")
        errors = [line for line in out.stdout.splitlines() if line.startswith("E:")]
        self.assertEqual(errors, [], "lintian reports errors")

    # ---------------------------------------------------------------- the unit

    def test_unit_settings(self):
        self.need_deb()
        unit = self.unit_text()
        self.assertEqual(unit_value(unit, "Type"), ["notify"])
        self.assertEqual(unit_value(unit, "User"), ["s3gate"])
        self.assertEqual(unit_value(unit, "ExecStart"), [f"/usr/sbin/s3gate -c {CONFIG}"])
        self.assertEqual(unit_value(unit, "ExecStartPre"), [f"/usr/sbin/s3gate -c {CONFIG} --check"])
        self.assertEqual(unit_value(unit, "ExecReload"), ["/bin/kill -HUP $MAINPID"])
        self.assertEqual(unit_value(unit, "Restart"), ["on-failure"])
        self.assertEqual(unit_value(unit, "CapabilityBoundingSet"), [""])
        self.assertEqual(unit_value(unit, "ProtectSystem"), ["strict"])
        self.assertEqual(unit_value(unit, "LogsDirectory"), ["s3gate"])
        self.assertEqual(unit_value(unit, "RestrictAddressFamilies"), ["AF_INET AF_INET6 AF_UNIX"])
        self.assertIn("@system-service", unit_value(unit, "SystemCallFilter"))
        # Two sockets per connection at the default limit, and some to spare.
        self.assertGreater(int(unit_value(unit, "LimitNOFILE")[0]), 2 * MAX_CONNECTIONS + 1000)
        # The binary pings the watchdog (WATCHDOG=1 at half the interval).
        self.assertEqual(unit_value(unit, "WatchdogSec"), ["30s"])
        self.assertNotIn("@", re.sub(r"^#.*$|SystemCallFilter=.*$", "", unit, flags=re.M),
                         "an unreplaced @VARIABLE@ in the unit")
        # The installed binary is where the unit says.
        self.assertTrue(os.access(self.in_root("/usr/sbin/s3gate"), os.X_OK))

    def test_unit_security_rating(self):
        self.need_deb()
        need("systemd-analyze")
        out = run(["systemd-analyze", "security", "--offline=yes", "--no-pager", self.unit_path()])
        m = re.search(r"Overall exposure level for s3gate\.service: ([0-9.]+) (\S+)", out.stdout)
        self.assertIsNotNone(m, out.stdout + out.stderr)
        print(f"\nsystemd-analyze security: {m.group(1)} {m.group(2)}")
        self.assertLessEqual(float(m.group(1)), SECURITY_TARGET, out.stdout)

    def test_unit_with_low_ports_drop_in(self):
        """The documented drop-in applies, and the service stays rated OK."""
        self.need_deb()
        need("systemd-analyze")
        drop_in_dir = self.unit_path() + ".d"
        os.makedirs(drop_in_dir, exist_ok=True)
        try:
            shutil.copy(self.in_root(f"{DOC}/examples/low-ports.conf"), drop_in_dir)
            out = run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                       f"--root={self.root}", "s3gate.service"])
        finally:
            shutil.rmtree(drop_in_dir)
        m = re.search(r"Overall exposure level for s3gate\.service: ([0-9.]+)", out.stdout)
        self.assertIsNotNone(m, out.stdout + out.stderr)
        # The drop-in is read: the ambient capability shows in the report.
        self.assertRegex(out.stdout, r"✗ AmbientCapabilities=")
        self.assertLessEqual(float(m.group(1)), SECURITY_TARGET, out.stdout)

    def test_unit_verify(self):
        """systemd-analyze verify is clean. It checks that the commands exist
        and that man:s3gate(8) resolves, so the unit is verified with its paths
        pointing into the unpacked package and MANPATH at its man pages."""
        self.need_deb()
        need("systemd-analyze")
        if shutil.which("man") is None:
            self.skipTest("man not found: verify checks Documentation=man:s3gate(8) with it")
        relocated_dir = os.path.join(self.tmp.name, "verify")
        os.makedirs(relocated_dir, exist_ok=True)
        relocated = os.path.join(relocated_dir, "s3gate.service")
        with open(relocated, "w", encoding="utf-8") as f:
            f.write(self.unit_text().replace("/usr/sbin/s3gate", self.in_root("/usr/sbin/s3gate")))
        env = dict(os.environ, MANPATH=self.in_root("/usr/share/man"))
        out = run(["systemd-analyze", "verify", relocated], env=env)
        self.assertEqual((out.returncode, out.stdout + out.stderr), (0, ""))

    # ---------------------------------------------------------------- the .rpm

    def test_rpm(self):
        self.need_rpm()
        files = self.rpm_query("-l").split()
        for path in ("/usr/sbin/s3gate", CONFIG, "/usr/share/man/man8/s3gate.8.gz",
                     f"{DOC}/copyright", f"{DOC}/examples/low-ports.conf"):
            self.assertIn(path, files)
        self.assertTrue(any(p.endswith("/systemd/system/s3gate.service") for p in files), files)
        # The package owns none of the system's directories.
        for shared in ("/etc", "/usr", "/usr/sbin", "/lib", "/lib/systemd", "/lib/systemd/system",
                       "/usr/share/man/man8", "/etc/logrotate.d"):
            self.assertNotIn(shared, files)

        configs = self.rpm_query("--configfiles").split()
        self.assertIn(CONFIG, configs)
        self.assertFalse(any(p.endswith("s3gate.service") for p in configs), "the unit is not a config file")
        dump = self.rpm_query("--dump")
        config_line = next(line for line in dump.splitlines() if line.startswith(CONFIG + " "))
        # rpm --dump: path size mtime digest mode owner group isconfig isdoc ...
        self.assertEqual(config_line.split()[7], "1", config_line)
        spec_flags = self.rpm_query("--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]")
        self.assertRegex(spec_flags, rf"(?m)^cn {re.escape(CONFIG)}$", "%config(noreplace) expected")

        requires = self.rpm_query("--requires")
        for dep in ("libevent_core", "libcares.so", "libyaml-cpp", "libc.so.6", "shadow-utils", "systemd"):
            self.assertIn(dep, requires)
        scripts = self.rpm_query("--scripts")
        self.assertIn("useradd -r", scripts)
        self.assertIn("systemctl --no-reload preset s3gate.service", scripts)
        self.assertIn("disable --now s3gate.service", scripts)
        self.assertNotRegex(scripts, r"systemctl (--no-reload )?(start|restart) s3gate",
                            "the service must not be started by the package")
        info = self.rpm_query("-i")
        self.assertRegex(info, r"License\s*: Apache-2.0")
        self.assertRegex(info, rf"Version\s*: {re.escape(self.version)}")

    # ---------------------------------------------------------------- the man page

    def test_man_page(self):
        need("man")
        page = os.path.join(BUILD, "s3gate.8")
        self.assertTrue(os.path.exists(page), f"{page} was not built")
        out = run(["man", "--warnings", "-l", page], env=dict(os.environ, MANWIDTH="80", MANPAGER="cat"))
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stderr, "", "man --warnings")
        text = out.stdout
        for section in ("NAME", "SYNOPSIS", "OPTIONS", "SIGNALS", "CONFIGURATION", "FILES",
                        "EXIT STATUS", "EXAMPLES"):
            self.assertRegex(text, rf"(?m)^{section}$")
        for word in ("--check", "--print-default-config", "--version", "explain", "SIGHUP", "SIGTERM",
                     "SIGUSR1", CONFIG):
            self.assertIn(word, text)
        # Every key of the configuration, as the binary's own default lists them.
        default = run([BIN, "--print-default-config"]).stdout
        keys = set(re.findall(r"^\s*#?\s*(?:- )?([a-z_]+):", default, re.M))
        self.assertGreater(len(keys), 30, default)
        missing = sorted(k for k in keys if not re.search(rf"\b{k}\b", text))
        self.assertEqual(missing, [], "configuration keys the man page does not describe")


if __name__ == "__main__":
    unittest.main()
