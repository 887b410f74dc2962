"""Start a child process whose output goes to a log file: the one way the tests and benchmarks do it."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def spawn_logged(
    argv: Sequence[str],
    logfile: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = ROOT,
    new_session: bool = False,
) -> subprocess.Popen:
    """Start ``argv`` with stdout and stderr appended to ``logfile`` (a failing test shows its tail) and no
    stdin; ``env`` None inherits ours. The log is opened for the child only: our copy is closed at once."""
    with open(logfile, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=new_session,
        )
