"""Runs one integration-test module with unittest and turns the outcome into
an exit status ctest understands:

    0   every test passed (some may have been skipped)
    77  tests were found but none ran: every one was skipped (the reasons are
        printed), so ctest reports the test as skipped, not passed
    1   a failure, an error, an unexpected success, or no test at all

Usage, from test/integration/ (test/CMakeLists.txt runs it this way):

    S3GATE_BIN=../../build/s3gate python3 run.py test_connect
    python3 run.py test_errors.ErrorTest.test_bucket_not_allowed
"""

import sys
import unittest

SKIPPED = 77


class _CountingResult(unittest.TextTestResult):
    """A text result that also counts the tests that passed."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.passed = 0

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1


def outcome(result):
    """(exit status, one-line summary) for a finished unittest result."""
    bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    ran = result.passed + len(result.expectedFailures)
    if bad:
        return 1, (f"FAILED: {len(result.failures)} failure(s), {len(result.errors)} error(s), "
                   f"{len(result.unexpectedSuccesses)} unexpected success(es)")
    if ran == 0 and result.skipped:
        return SKIPPED, f"SKIPPED: all {len(result.skipped)} test(s) or class(es) skipped"
    if ran == 0:
        return 1, "FAILED: no test found"
    summary = f"OK: {result.passed} passed"
    if result.expectedFailures:
        summary += f", {len(result.expectedFailures)} expected failure(s)"
    if result.skipped:
        summary += f", {len(result.skipped)} skipped"
    return 0, summary


def skip_reasons(result):
    """The distinct skip reasons, each with how many tests gave it, in first-seen order."""
    counts = {}
    for _, reason in result.skipped:
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    suite = unittest.defaultTestLoader.loadTestsFromNames(argv[1:])
    runner = unittest.TextTestRunner(verbosity=2, resultclass=_CountingResult, stream=sys.stderr)
    result = runner.run(suite)
    status, summary = outcome(result)
    reasons = skip_reasons(result)
    if reasons:
        print("skip reasons:", file=sys.stderr)
        for reason, n in reasons.items():
            print(f"  {n} x {reason}", file=sys.stderr)
    print(f"{' '.join(argv[1:])}: {summary} (exit {status})", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
