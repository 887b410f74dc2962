"""``make soak``: run the fault tests again and again, each time on a fresh control plane, and count.

A fault test that passes 19 times in 20 is a bug (issue 11): this is how to find out before CI does.
Every failed run's pytest output is kept in ``.test-logs/soak-<n>.log`` (with the operator logs that the
fixtures keep under ``.test-logs/``).

    python -m tests.soak [--runs 20] [pytest node ids ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAULT_TESTS = [
    "tests/integration/test_faults.py",
    "tests/integration/test_leader_election.py",
    "tests/integration/test_never_silent.py",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("tests", nargs="*", default=FAULT_TESTS)
    args = parser.parse_args(argv)
    logs = ROOT / ".test-logs"
    logs.mkdir(exist_ok=True)
    passed = failed = 0
    for run in range(1, args.runs + 1):
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.tests],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - started
        summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        if proc.returncode == 0:
            passed += 1
            print(f"run {run}/{args.runs}: pass ({seconds:.0f}s) {summary}", flush=True)
        else:
            failed += 1
            kept = logs / f"soak-{run}.log"
            kept.write_text(proc.stdout + proc.stderr)
            print(f"run {run}/{args.runs}: FAIL ({seconds:.0f}s) {summary} -- output in {kept}", flush=True)
    print(f"soak: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
