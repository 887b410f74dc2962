"""Run the data plane as real processes and feed it the operator's ConfigMaps as files, like a kubelet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from cells_operator.devcluster.cluster import free_port
from tests.support.kubectl import Kubectl, eventually


class Process:
    def __init__(self, name: str, argv: list[str], logdir: Path):
        self.name = name
        self.argv = argv
        self.logfile = logdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        log = open(self.logfile, "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        )
        log.close()
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        if not self.logfile.exists():
            return ""
        return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])


def wait_http_ok(url: str, timeout: float = 30) -> None:
    def probe():
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    eventually(probe, timeout, interval=0.1, message=f"{url} ready")


def echo_backend(name: str, logdir: Path) -> tuple[Process, int]:
    port = free_port()
    proc = Process(
        f"echo-{name}",
        [sys.executable, "-m", "tests.support.echo_backend", "--name", name, "--port", str(port)],
        logdir,
    ).start()
    wait_http_ok(f"http://127.0.0.1:{port}/healthz")
    return proc, port


class ConfigMapMirror:
    """Copy ConfigMap keys to files the way a kubelet updates a volume: atomically, shortly after a change."""

    def __init__(self, kubectl: Kubectl, namespace: str, target: Path, interval: float = 0.3):
        self.kubectl = kubectl
        self.namespace = namespace
        self.target = target
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.syncs = 0

    def sync_once(self) -> None:
        for name in ("cells-topology", "cells-router-rules"):
            cm = self.kubectl.get_or_none("configmap", name, self.namespace)
            folder = self.target / name
            folder.mkdir(parents=True, exist_ok=True)
            for key, value in ((cm or {}).get("data") or {}).items():
                path = folder / key
                if path.exists() and path.read_text() == value:
                    continue
                fd, tmp = tempfile.mkstemp(dir=folder)
                with os.fdopen(fd, "w") as fh:
                    fh.write(value)
                os.replace(tmp, path)
        self.syncs += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:  # keep mirroring through transient API errors
                print(f"mirror: {exc}", file=sys.stderr)
            self._stop.wait(self.interval)

    def start(self) -> ConfigMapMirror:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class HttpResult:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def cell(self) -> str | None:
        return self.headers.get("X-Cell")


def request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, data: bytes | None = None, timeout: float = 15
) -> HttpResult:
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpResult(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        return HttpResult(err.code, dict(err.headers.items()), err.read())


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started
