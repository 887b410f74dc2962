"""Start a child process whose output goes to a log file: the dev tools' helper, with the working folder
the tests and benchmarks have always had (the repository root) as the default."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from cells_devtools.process import spawn_logged as _spawn_logged

ROOT = Path(__file__).resolve().parents[2]


def spawn_logged(
    argv: Sequence[str],
    logfile: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = ROOT,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """:func:`cells_devtools.process.spawn_logged` with the repository root as the default working folder."""
    return _spawn_logged(argv, logfile, env=env, cwd=cwd, new_session=new_session)
