"""``make demo``: CRDs, the operator, the sample resources, and what came of them, on the local cluster.

Idempotent: re-running restarts the operator (picking up code changes) and re-applies the samples.
The operator keeps running in the background (pid and log in the cluster folder) until
``make demo-down``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .devcluster.assets import find_kubectl
from .process import spawn_logged

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "deploy" / "samples"


def _kubectl(kubeconfig: Path, *args: str, check: bool = True) -> str:
    binary = str(find_kubectl(log=lambda m: None))
    proc = subprocess.run([binary, f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def _stop_operator(pidfile: Path) -> None:
    """Stop every background process of an earlier demo (pids, one per line)."""
    if not pidfile.exists():
        return
    for line in pidfile.read_text().split():
        _kill(int(line))
    pidfile.unlink(missing_ok=True)


def _spawn(argv: list[str], log: Path, pidfile: Path, env: dict[str, str] | None = None) -> int:
    proc = spawn_logged(argv, log, env=env or None, cwd=ROOT, new_session=True)
    with open(pidfile, "a") as fh:
        fh.write(f"{proc.pid}\n")
    return proc.pid


def _wait_url(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{url} did not become ready within {timeout:.0f}s")


def _dataplane(cluster_dir: Path, ns: str, kubeconfig: Path, pidfile: Path) -> None:
    """Echo cells on the sample addresses, the ConfigMaps mirrored to files, Topology Service, router."""
    import urllib.request

    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    logs = cluster_dir / "demo-logs"
    logs.mkdir(exist_ok=True)
    mounts = cluster_dir / "mounts"
    py = sys.executable
    for cell, port in (("cell-1 (legacy)", 18001), ("cell-2", 18002), ("cell-3", 18003)):
        _spawn(
            [py, "-m", "cells_dataplane.echo", "--name", cell, "--port", str(port)],
            logs / f"echo-{port}.log",
            pidfile,
            env,
        )
    _spawn(
        [py, "-m", "cells_devtools.mirror", "--namespace", ns, "--dir", str(mounts), "--interval", "0.5"],
        logs / "mirror.log",
        pidfile,
        env,
    )
    _spawn(
        [
            py,
            "-m",
            "cells_dataplane.topology_service",
            "--records",
            str(mounts / "cells-topology/topology.json"),
            "--host",
            "127.0.0.1",
            "--port",
            "18100",
            "--poll",
            "0.5",
        ],
        logs / "topology-service.log",
        pidfile,
        env,
    )
    _spawn(
        [
            py,
            "-m",
            "cells_dataplane.router",
            "--rules",
            str(mounts / "cells-router-rules/session_token.json"),
            "--topology-service",
            "http://127.0.0.1:18100",
            "--host",
            "127.0.0.1",
            "--port",
            "18080",
            "--admin-port",
            "18081",
            "--poll",
            "0.5",
        ],
        logs / "router.log",
        pidfile,
        env,
    )
    _wait_url("http://127.0.0.1:18100/readyz")
    _wait_url("http://127.0.0.1:18081/readyz")
    print("==> requests through the router (http://127.0.0.1:18080)")
    for label, path, cookie in (
        ("no cookie", "/", None),
        ("session cookie of cell 2", "/dashboard", "_gitlab_session=cell-2-5f3a9c"),
        ("session cookie of cell 3", "/dashboard", "_gitlab_session=cell-3-77b0e1"),
        ("force-cell=cell-3 beats a cell-2 session", "/", "_gitlab_session=cell-2-5f3a9c; force-cell=cell-3"),
        ("path by cell id", "/api/v4/cells/2/projects", None),
    ):
        req = urllib.request.Request("http://127.0.0.1:18080" + path, headers={"Cookie": cookie} if cookie else {})
        with urllib.request.urlopen(req, timeout=10) as resp:
            rule = f"{resp.headers['X-Cells-Router-Rule-Action']}/{resp.headers.get('X-Cells-Router-Rule-Type')}"
            print(f"    {label:<40} GET {path:<26} -> {resp.headers['X-Cell']:<16} (rule {rule})")


def _wait_ready(kubeconfig: Path, namespace: str, kinds: list[str], timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = []
        for kind in kinds:
            items = json.loads(_kubectl(kubeconfig, "get", kind, "-n", namespace, "-o", "json"))["items"]
            for obj in items:
                conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
                fresh = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
                if not fresh or conds.get("Ready", {}).get("status") != "True":
                    pending.append(f"{kind}/{obj['metadata']['name']}")
        if not pending:
            return True
        time.sleep(0.5)
    print(f"still not Ready after {timeout:.0f}s: {', '.join(pending)}", file=sys.stderr)
    return False


def _refusal(kubeconfig: Path, ns: str) -> None:
    """Show the admission webhook at work: a Cell reusing cell 1's id is refused at apply time."""
    binary = str(find_kubectl(log=lambda m: None))
    duplicate = json.dumps(
        {
            "apiVersion": "cells.dev/v1alpha1",
            "kind": "Cell",
            "metadata": {"name": "cell-copy"},
            "spec": {"id": 1, "address": "cell-copy.cells.svc:8080"},
        }
    )
    print("==> a Cell that reuses id 1, applied with --dry-run=server: refused by the admission webhook")
    for _ in range(60):
        proc = subprocess.run(
            [binary, f"--kubeconfig={kubeconfig}", "apply", "--dry-run=server", "-n", ns, "-f", "-"],
            input=duplicate,
            capture_output=True,
            text=True,
        )
        if "denied the request" in proc.stderr:
            print("    " + proc.stderr.strip())
            return
        time.sleep(0.5)
    print("    (the webhook did not answer: see the operator log)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cells-dev demo")
    parser.add_argument("--cluster-dir", default=".cluster")
    parser.add_argument("--namespace", default="cells-demo")
    parser.add_argument("--stop", action="store_true", help="stop the demo operator")
    args = parser.parse_args(argv)
    cluster_dir = Path(args.cluster_dir).resolve()
    kubeconfig = cluster_dir / "kubeconfig"
    pidfile = cluster_dir / "demo.pids"
    if args.stop:
        _stop_operator(pidfile)
        print("demo operator stopped")
        return 0
    if not kubeconfig.exists():
        sys.exit(f"no cluster kubeconfig at {kubeconfig}: run `make cluster` first")
    ns = args.namespace

    print("==> installing CRDs")
    print(_kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds")), end="")
    _kubectl(
        kubeconfig,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/cells.cells.dev",
        "crd/routingrules.cells.dev",
    )

    print("==> (re)starting the operator in the background")
    _stop_operator(pidfile)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    from .devcluster.cluster import free_port

    webhook = [
        "--webhook-listen", f"127.0.0.1:{free_port()}", "--webhook-self-signed",
        "--webhook-cert-dir", str(cluster_dir / "webhook"), "--webhook-configuration", "cells-operator",
    ]  # fmt: skip
    pid = _spawn(
        [sys.executable, "-m", "cells_operator.cli", "run", *webhook],
        cluster_dir / "operator.log",
        pidfile,
        env,
    )
    print(f"    pid {pid}, log {cluster_dir / 'operator.log'}; admission webhooks registered as cells-operator")

    print(f"==> applying the samples to namespace {ns}")
    _kubectl(kubeconfig, "create", "namespace", ns, check=False)
    print(
        _kubectl(
            kubeconfig, "apply", "-n", ns, "-f", str(SAMPLES / "cells.yaml"), "-f", str(SAMPLES / "routingrules.yaml")
        ),
        end="",
    )

    ok = _wait_ready(kubeconfig, ns, ["cells", "routingrules"])
    print("==> kubectl get cells,routingrules -o wide")
    print(_kubectl(kubeconfig, "get", "cells", "-n", ns, "-o", "wide"), end="")
    print(_kubectl(kubeconfig, "get", "routingrules", "-n", ns, "-o", "wide"), end="")
    topology = json.loads(_kubectl(kubeconfig, "get", "configmap", "cells-topology", "-n", ns, "-o", "json"))
    print("==> Topology Service records: configmap cells-topology, key config.toml")
    print(topology["data"]["config.toml"])
    router = json.loads(_kubectl(kubeconfig, "get", "configmap", "cells-router-rules", "-n", ns, "-o", "json"))
    print("==> Router rules: configmap cells-router-rules, key session_token.json")
    print(router["data"]["session_token.json"])
    _refusal(kubeconfig, ns)
    _dataplane(cluster_dir, ns, kubeconfig, pidfile)
    print("    try: curl -si -b '_gitlab_session=cell-3-abc' http://127.0.0.1:18080/ | grep -i x-cell")
    print(f"export KUBECONFIG={kubeconfig}   # to look around; `make demo-down` stops everything")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
