"""Run the data plane as real processes and feed it the operator's ConfigMaps as files, like a kubelet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from cells_devtools.devcluster.cluster import free_port
from tests.support.cells import wait_ready
from tests.support.kubectl import Kubectl, eventually
from tests.support.process import spawn_logged


class Process:
    def __init__(self, name: str, argv: list[str], logdir: Path):
        self.name = name
        self.argv = argv
        self.logfile = logdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        self.proc = spawn_logged(self.argv, self.logfile, env={**os.environ, "PYTHONUNBUFFERED": "1"})
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


def _options(options: dict[str, object]) -> list[str]:
    """``max_age=1`` -> ``--max-age 1``: the data plane CLIs' own flags, from keyword arguments."""
    return [arg for key, value in options.items() for arg in (f"--{key.replace('_', '-')}", str(value))]


def topology_service_argv(records: Path, port: int, **options: object) -> list[str]:
    """``cells-topology-service`` on loopback serving ``records`` (the operator's topology.json)."""
    return [
        sys.executable, "-m", "cells_dataplane.topology_service",
        "--records", str(records), "--host", "127.0.0.1", "--port", str(port), *_options(options),
    ]  # fmt: skip


def router_argv(rules: Path, topology_service: str, port: int, admin_port: int, **options: object) -> list[str]:
    """``cells-router`` on loopback with one ruleset file, asking ``topology_service`` to classify."""
    return [
        sys.executable, "-m", "cells_dataplane.router",
        "--rules", str(rules), "--topology-service", topology_service,
        "--host", "127.0.0.1", "--port", str(port), "--admin-port", str(admin_port), *_options(options),
    ]  # fmt: skip


def echo_argv(name: str, port: int) -> list[str]:
    """``cells_dataplane.echo``: a stand-in cell on loopback that answers with its ``name``."""
    return [sys.executable, "-m", "cells_dataplane.echo", "--name", name, "--port", str(port)]


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
    proc = Process(f"echo-{name}", echo_argv(name, port), logdir).start()
    wait_http_ok(f"http://127.0.0.1:{port}/healthz")
    return proc, port


class ConfigMapMirror:
    """The data plane's own mirror (as a kubelet would mount the ConfigMaps), in a thread for the test."""

    def __init__(self, kubeconfig: Path, namespace: str, target: Path, interval: float = 0.3):
        from kubernetes.client import ApiClient, Configuration, CoreV1Api
        from kubernetes.config import load_kube_config

        from cells_devtools.mirror import Mirror

        configuration = Configuration()
        load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        self.mirror = Mirror(namespace, target, core=CoreV1Api(ApiClient(configuration)))
        self._thread = threading.Thread(target=self.mirror.run, args=(interval,), daemon=True)

    def start(self) -> ConfigMapMirror:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.mirror.stop()
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


class DataPlane:
    """The e2e data plane, built step by step: echo cells, Cells and rules registered through the API, the
    operator's ConfigMaps mirrored to files as a kubelet mounts them, then the Topology Service and routers
    reading those files. Every process is kept by name; :meth:`stop` ends them all, latest first."""

    def __init__(self, kubectl: Kubectl, namespace: str, workdir: Path):
        self.kubectl = kubectl
        self.namespace = namespace
        self.logdir = workdir / "logs"
        self.logdir.mkdir()
        self.mounts = workdir / "mounts"
        self.procs: dict[str, Process] = {}
        self.ports: dict[str, int] = {}
        self.mirror: ConfigMapMirror | None = None

    def echo_cells(self, *names: str) -> None:
        """Start an echo backend a name; its port is ``ports[name]``."""
        for name in names:
            proc, self.ports[name] = echo_backend(name, self.logdir)
            self.procs[proc.name] = proc

    def local(self, name: str) -> str:
        """The loopback address of echo cell ``name``."""
        return f"127.0.0.1:{self.ports[name]}"

    def register(self, cells: list[dict], rules: list[dict]) -> None:
        """Apply ``cells`` and ``rules``; return once every rule is Ready."""
        self.kubectl.apply(cells, self.namespace)
        self.kubectl.apply(rules, self.namespace)
        for rule in rules:
            wait_ready(self.kubectl, "routingrule", rule["metadata"]["name"], self.namespace)

    def mount(self, ruleset: str) -> tuple[Path, Path]:
        """Mirror the ConfigMaps to files; (the rules file of ``ruleset``, topology.json) once both exist."""
        self.mirror = ConfigMapMirror(self.kubectl.kubeconfig, self.namespace, self.mounts).start()
        rules_file = self.mounts / "cells-router-rules" / f"{ruleset}.json"
        records_file = self.mounts / "cells-topology" / "topology.json"
        eventually(lambda: rules_file.exists() and records_file.exists(), message="ConfigMaps mounted")
        return rules_file, records_file

    def start(self, name: str, argv: list[str], ready: str) -> None:
        self.procs[name] = Process(name, argv, self.logdir).start()
        wait_http_ok(ready)

    def topology_service(self, records_file: Path, **options: object) -> str:
        """Start ``cells-topology-service`` on ``records_file``; its base URL once it is ready."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.start("topology-service", topology_service_argv(records_file, port, **options), f"{url}/readyz")
        return url

    def router(self, name: str, rules_file: Path, topology_service: str, **options: object) -> tuple[str, str]:
        """Start a ``cells-router`` called ``name``; (its URL, its admin URL) once it is ready."""
        port, admin = free_port(), free_port()
        argv = router_argv(rules_file, topology_service, port, admin, **options)
        self.start(name, argv, f"http://127.0.0.1:{admin}/readyz")
        return f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"

    def stop(self, show_logs: bool = False) -> None:
        """Stop the mirror and every process, latest first; print their log tails if ``show_logs``."""
        if self.mirror is not None:
            self.mirror.stop()
        for proc in reversed(self.procs.values()):
            proc.stop()
        if show_logs:
            for proc in self.procs.values():
                print(f"----- {proc.name} -----\n{proc.log_tail()}")
