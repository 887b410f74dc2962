"""Start a child process whose output goes to a log file: the one way the dev tools, tests and benchmarks
do it (the local cluster's etcd and API server, ``make demo``'s processes, the tests' operator and data
plane), so a fix to how children are started lands everywhere at once."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn_logged(
    argv: Sequence[str],
    logfile: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``logfile`` (so a failure can show its tail) and
    no stdin; ``env`` None inherits ours. ``new_session`` detaches the child from our process group, for
    children that must outlive a Ctrl-C or be killed as a group. The log is opened for the child only: our
    copy is closed at once."""
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
