"""A fresh local control plane with the CRDs installed: what every operator benchmark starts from."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cells_devtools.devcluster.cluster import LocalCluster
from tests.support.kubectl import Kubectl

ROOT = Path(__file__).resolve().parents[2]


def fresh_control_plane(prefix: str, namespaces: tuple[str, ...] = ()) -> tuple[LocalCluster, Kubectl, Path]:
    """Start one in a new temporary folder; apply ``crds/``; create ``namespaces``. The caller stops it."""
    workdir = Path(tempfile.mkdtemp(prefix=f"cells-bench-{prefix}-"))
    cluster = LocalCluster.create(workdir / "cp", quiet=True).start()
    kubectl = Kubectl(cluster.kubeconfig)
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl.wait_crds(["cells.cells.dev", "routingrules.cells.dev"])
    for namespace in namespaces:
        kubectl("create", "namespace", namespace)
    return cluster, kubectl, workdir
