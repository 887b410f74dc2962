"""Start and stop a real Kubernetes control plane (etcd + kube-apiserver + controller-manager) on loopback.

This is the embedded default cluster: the integration tier, ``make demo`` and ``make cluster`` all run
against it. Everything binds to 127.0.0.1 on ports chosen free at start, and all state lives under one
working folder, so two instances can run side by side. The API server serves TLS with its
self-generated certificate, authenticates an admin through a static token file (group
``system:masters``) and authorizes with RBAC, so RBAC tests are real.

A cluster can outlive the process that started it (``make cluster``): the pids and ports are written
to ``state.json`` in the working folder, from which :meth:`LocalCluster.attach` finds it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..process import spawn_logged
from .assets import AssetError, Assets, binary_version, find_assets

ADMIN_USER = "cells-admin"


class ClusterError(RuntimeError):
    """The control plane could not start; the message includes the failing component's log tail."""


@dataclass(frozen=True)
class StaticToken:
    """A line of the API server's static token file: a bearer token mapped to a user and groups."""

    token: str
    user: str
    uid: str
    groups: tuple[str, ...] = ()

    def csv_line(self) -> str:
        groups = ",".join(self.groups)
        return f'{self.token},{self.user},{self.uid},"{groups}"' if groups else f"{self.token},{self.user},{self.uid}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:port now (with SO_REUSEADDR, as Go's listeners do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class LocalCluster:
    """One control plane. ``start()`` returns once ``/readyz`` answers ok; ``stop()`` ends every process."""

    workdir: Path
    assets: Assets | None = None
    extra_tokens: list[StaticToken] = field(default_factory=list)
    apiserver_port: int = 0
    etcd_port: int = 0
    pids: dict[str, int] = field(default_factory=dict)
    admin_token: str = ""
    quiet: bool = False
    server_version: tuple[int, int] | None = None  # what kube-apiserver --version said, set by start()

    # ----------------------------------------------------------------- paths
    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "apiserver.crt"

    @property
    def logdir(self) -> Path:
        return self.workdir / "logs"

    def _log(self, msg: str) -> None:
        if not self.quiet:
            print(f"[devcluster] {msg}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------- lifecycle
    @classmethod
    def create(cls, workdir: Path | None = None, **kwargs) -> LocalCluster:
        workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="cells-devcluster-"))
        workdir.mkdir(parents=True, exist_ok=True)
        return cls(workdir=workdir.resolve(), **kwargs)

    def start(self, timeout: float = 180.0) -> LocalCluster:
        if self.assets is None:
            self.assets = find_assets(build=True)
        for name in ("etcd", "kube_apiserver"):
            path = getattr(self.assets, name)
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise AssetError(f"{name.replace('_', '-')} binary missing or not executable: {path}")
        self.server_version = binary_version(self.assets.kube_apiserver)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._check_ports()
        try:
            self._start_etcd(timeout)
            self._prepare_auth()
            self._start_apiserver(timeout)
            self._write_kubeconfig()
            self._start_controller_manager()
            self._write_state()
        except BaseException:
            self.stop()
            raise
        self._log(f"control plane ready at {self.server} (logs in {self.logdir})")
        return self

    def _check_ports(self) -> None:
        self.etcd_port = self.etcd_port or free_port()
        self.etcd_peer_port = free_port()
        self.apiserver_port = self.apiserver_port or free_port()
        self.kcm_port = free_port()
        for port in (self.etcd_port, self.apiserver_port):
            if port_in_use(port):
                raise ClusterError(f"port {port} on 127.0.0.1 is already in use; choose another or stop its owner")

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        self._log(f"starting {name}: {argv[0]}")
        proc = spawn_logged(argv, self.logdir / f"{name}.log", cwd=self.workdir, new_session=True)
        self.pids[name] = proc.pid
        return proc

    def _wait(self, name: str, proc: subprocess.Popen, probe, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited with code {proc.returncode}:\n{self.log_tail(name)}")
            if probe():
                return
            time.sleep(0.2)
        raise ClusterError(f"{name} not ready after {timeout:.0f}s:\n{self.log_tail(name)}")

    def _start_etcd(self, timeout: float) -> None:
        assert self.assets
        url = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        proc = self._spawn(
            "etcd",
            [
                str(self.assets.etcd),
                "--name",
                "default",
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                url,
                "--advertise-client-urls",
                url,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"default={peer}",
                "--log-level",
                "warn",
            ],
        )
        self._wait("etcd", proc, lambda: _http_ok(f"{url}/health"), timeout)

    def _prepare_auth(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        key = pki / "sa.key"
        if not key.exists():
            subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
            subprocess.run(
                ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pki / "sa.pub")],
                check=True,
                capture_output=True,
            )
        self.admin_token = self.admin_token or secrets.token_hex(24)
        tokens = [StaticToken(self.admin_token, ADMIN_USER, "1000", ("system:masters",)), *self.extra_tokens]
        (pki / "tokens.csv").write_text("".join(t.csv_line() + "\n" for t in tokens))
        os.chmod(pki / "tokens.csv", 0o600)

    def _start_apiserver(self, timeout: float) -> None:
        assert self.assets
        pki = self.workdir / "pki"
        proc = self._spawn(
            "kube-apiserver",
            [
                str(self.assets.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--secure-port={self.apiserver_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # The reconciler publishes the advertise address as the endpoints of Service
                # default/kubernetes, for pods; there are no pods here, and current releases refuse a
                # loopback address for it ("may not be in the loopback range").
                "--endpoint-reconciler-type=none",
                f"--cert-dir={pki}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount",
                "--audit-log-path=" + str(self.logdir / "audit.log"),
                "--audit-policy-file=" + str(self._audit_policy()),
                "--audit-log-maxsize=200",
                "--v=1",
            ],
        )
        self._wait("kube-apiserver", proc, self.ready, timeout)

    def _audit_policy(self) -> Path:
        """Metadata-level audit of writes: benchmarks count API writes per object from it."""
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n"
            "- level: Metadata\n  verbs: [create, update, patch, delete, deletecollection]\n"
            "- level: None\n"
        )
        return policy

    def _write_kubeconfig(self) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "cells-local",
            "clusters": [
                {"name": "cells-local", "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": self.admin_token}}],
            "contexts": [
                {
                    "name": "cells-local",
                    "context": {"cluster": "cells-local", "user": ADMIN_USER, "namespace": "default"},
                }
            ],
        }
        # JSON is YAML: no YAML dependency needed to write a kubeconfig.
        self.kubeconfig.write_text(json.dumps(cfg, indent=2))
        os.chmod(self.kubeconfig, 0o600)

    def kubeconfig_for(self, token: str, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig for another static-token identity (RBAC tests)."""
        cfg = json.loads(self.kubeconfig.read_text())
        cfg["users"] = [{"name": ADMIN_USER, "user": {"token": token}}]
        cfg["contexts"][0]["context"]["namespace"] = namespace
        path.write_text(json.dumps(cfg, indent=2))
        return path

    def _start_controller_manager(self) -> None:
        assert self.assets
        if self.assets.kube_controller_manager is None:
            return
        pki = self.workdir / "pki"
        self._spawn(
            "kube-controller-manager",
            [
                str(self.assets.kube_controller_manager),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--leader-elect=false",
                *self._controller_manager_version_flags(),
                "--bind-address=127.0.0.1",
                f"--secure-port={self.kcm_port}",
                "--v=1",
            ],
        )

    def _controller_manager_version_flags(self) -> list[str]:
        """Flags whose spelling depends on the release (the binary's own ``--version``, not K8S_VERSION).

        ``--port=0`` turned off the insecure port until 1.23; 1.24 removed the flag and the port. The
        disabled controllers need nodes, volumes or a cloud, none of which exist here. 1.28 renamed
        every controller to ``<name>-controller``, and 1.37's list no longer has the cloud ones (route,
        service, cloud-node-lifecycle); without ``--cloud-provider`` they did nothing anyway.
        """
        version = self.server_version or (1, 20)
        if version >= (1, 28):
            disabled = [
                "node-ipam-controller",
                "node-lifecycle-controller",
                "persistentvolume-attach-detach-controller",
                "persistentvolume-binder-controller",
                "persistentvolume-expander-controller",
            ]
        else:
            disabled = [
                "nodeipam",
                "nodelifecycle",
                "attachdetach",
                "persistentvolume-binder",
                "persistentvolume-expander",
                "route",
                "service",
                "cloud-node-lifecycle",
            ]
        flags = ["--port=0"] if version < (1, 24) else []
        return [*flags, "--controllers=*," + ",".join(f"-{c}" for c in disabled)]

    def _write_state(self) -> None:
        state = {
            "pids": self.pids,
            "apiserver_port": self.apiserver_port,
            "etcd_port": self.etcd_port,
            "kubeconfig": str(self.kubeconfig),
        }
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def attach(cls, workdir: Path) -> LocalCluster:
        """Find a cluster started earlier (possibly by another process) from its working folder."""
        workdir = Path(workdir).resolve()
        state = json.loads((workdir / "state.json").read_text())
        cfg = json.loads((workdir / "kubeconfig").read_text())
        return cls(
            workdir=workdir,
            apiserver_port=state["apiserver_port"],
            etcd_port=state["etcd_port"],
            pids={k: int(v) for k, v in state["pids"].items()},
            admin_token=cfg["users"][0]["user"]["token"],
        )

    def alive(self) -> bool:
        return bool(self.pids) and all(_pid_alive(pid) for pid in self.pids.values())

    def stop(self, grace: float = 10.0) -> None:
        """Stop every process this cluster started, newest first: SIGTERM, then SIGKILL after ``grace``."""
        for name in reversed(list(self.pids)):
            pid = self.pids[name]
            if not _pid_alive(pid):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _reap(pid)
        self.pids.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "state.json").unlink()

    def restart_apiserver(self, timeout: float = 120.0) -> None:
        """Kill and restart kube-apiserver on the same port (fault-injection tests)."""
        self._restart("kube-apiserver", self._start_apiserver, timeout)

    def restart_etcd(self, timeout: float = 120.0) -> None:
        """Kill and restart etcd on the same ports and data (fault-injection tests): the API server loses
        its storage for a moment and answers errors until etcd is back."""
        self._restart("etcd", self._start_etcd, timeout)

    def _restart(self, name: str, start: Callable[[float], None], timeout: float) -> None:
        pid = self.pids.pop(name, None)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 30.0)
        # A killed process keeps its listening sockets until the kernel has torn them down; 1.37's
        # apiserver binds its port sooner than that ("bind: address already in use").
        ports = {
            "kube-apiserver": [self.apiserver_port],
            "etcd": [self.etcd_port, getattr(self, "etcd_peer_port", 0)],
        }.get(name, [])
        deadline = time.monotonic() + 30.0
        while not all(port_free(p) for p in ports if p):
            if time.monotonic() > deadline:
                raise ClusterError(f"{name}'s ports {ports} still taken 30s after it was killed")
            time.sleep(0.1)
        start(timeout)
        self._write_state()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ---------------------------------------------------------------- probes
    def ready(self) -> bool:
        if not self.ca_file.exists():
            return False
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return _http_ok(f"{self.server}/readyz", token=self.admin_token, context=ctx)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logdir / f"{name}.log"
        if not path.exists():
            return f"(no log for {name})"
        text = path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def all_log_tails(self, lines: int = 30) -> str:
        names = ("etcd", "kube-apiserver", "kube-controller-manager")
        return "\n".join(f"--- {n} ({self.logdir / (n + '.log')}) ---\n{self.log_tail(n, lines)}" for n in names)

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


def _http_ok(url: str, token: str | None = None, context: ssl.SSLContext | None = None) -> bool:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=2, context=context) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _wait_gone(pid: int, timeout: float) -> None:
    """Wait until a killed process has exited (reaping it if it is our child)."""
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
