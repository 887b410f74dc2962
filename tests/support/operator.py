"""Run the operator as a real subprocess, exactly as a user would (``cells-operator run``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cells_devtools.devcluster.cluster import free_port
from tests.support.process import spawn_logged
from tests.support.prometheus import metric_value  # noqa: F401  (re-exported: the tests import it from here)


class OperatorProcess:
    def __init__(
        self, kubeconfig: Path, logfile: Path, extra_args: list[str] | None = None, env: dict[str, str] | None = None
    ):
        self.kubeconfig = Path(kubeconfig)
        self.logfile = Path(logfile)
        self.extra_args = extra_args or []
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.metrics_port = free_port()

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def scrape(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            return resp.read().decode()

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "CELLS_DEBOUNCE_SECONDS": "0.2",
            "PYTHONUNBUFFERED": "1",
            "CELLS_METRICS_PORT": str(self.metrics_port),
            **self.env,
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)
        argv = [sys.executable, "-m", "cells_operator.cli", "run", "--verbose", *self.extra_args]
        self.proc = spawn_logged(argv, self.logfile, env=env, cwd=None)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye -- the crash the operator must survive."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def readyz(self) -> tuple[int, str]:
        """The operator's ``/readyz``: (status, body); (0, why) while nothing answers on the port yet."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, f"not serving: {exc}"

    def log_tail(self, lines: int = 60) -> str:
        if not self.logfile.exists():
            return "(no operator log)"
        return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""


def print_log_if_failed(proc: OperatorProcess, request: Any, lines: int = 80) -> None:
    """After a test (in a fixture's teardown): the operator's log tail in pytest's output if it failed."""
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("\n----- operator log (tail) -----\n" + proc.log_tail(lines))


def operator_running(kubeconfig: Any, log: Any, args: list[str], request: Any) -> Iterator[OperatorProcess]:
    """A fixture's body (``yield from``): an operator with ``args`` for one test, its log shown on failure."""
    proc = OperatorProcess(kubeconfig, log, args)
    proc.start()
    yield proc
    proc.stop()
    print_log_if_failed(proc, request)
