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

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "deploy" / "samples"


def _kubectl(kubeconfig: Path, *args: str, check: bool = True) -> str:
    binary = str(find_kubectl(log=lambda m: None))
    proc = subprocess.run([binary, f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def _stop_operator(pidfile: Path) -> None:
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cells-operator-demo")
    parser.add_argument("--cluster-dir", default=".cluster")
    parser.add_argument("--namespace", default="cells-demo")
    parser.add_argument("--stop", action="store_true", help="stop the demo operator")
    args = parser.parse_args(argv)
    cluster_dir = Path(args.cluster_dir).resolve()
    kubeconfig = cluster_dir / "kubeconfig"
    pidfile = cluster_dir / "operator.pid"
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
    log = open(cluster_dir / "operator.log", "ab")  # noqa: SIM115 - handed to the child
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cells_operator.cli", "run", "--standalone"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    pidfile.write_text(str(proc.pid))
    print(f"    pid {proc.pid}, log {cluster_dir / 'operator.log'}")

    print(f"==> applying the samples to namespace {ns}")
    _kubectl(kubeconfig, "create", "namespace", ns, check=False)
    print(_kubectl(kubeconfig, "apply", "-n", ns, "-f", str(SAMPLES)), end="")

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
    print(f"export KUBECONFIG={kubeconfig}   # to look around; `make demo-down` stops everything")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
