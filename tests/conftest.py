"""Shared fixtures: the local control plane (once per session), the operator, isolated namespaces."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.support.kubectl import Kubectl
from tests.support.operator import OperatorProcess

ROOT = Path(__file__).resolve().parent.parent


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    """A real etcd + kube-apiserver (+ controller-manager), or the cluster KUBECONFIG names (e2e).

    ``CELLS_TEST_KUBECONFIG`` points the suite at an existing cluster (kind, or `make cluster`).
    """
    from cells_devtools.devcluster.cluster import LocalCluster

    external = os.environ.get("CELLS_TEST_KUBECONFIG")
    if external:
        yield ExternalCluster(Path(external))
        return
    cluster = LocalCluster.create(tmp_path_factory.mktemp("controlplane"))
    cluster.start()
    kubectl = Kubectl(cluster.kubeconfig)
    kubectl("apply", "-f", str(ROOT / "crds"))
    kubectl.wait_crds(["cells.cells.dev", "routingrules.cells.dev"])
    yield cluster
    cluster.stop()


class ExternalCluster:
    def __init__(self, kubeconfig: Path):
        self.kubeconfig = kubeconfig

    def all_log_tails(self) -> str:
        return "(external cluster: no control-plane logs)"


@pytest.fixture(scope="session")
def kubectl(control_plane) -> Kubectl:
    return Kubectl(control_plane.kubeconfig)


@pytest.fixture
def namespace(kubectl, request):
    name = f"t-{request.node.name[:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    name = "".join(c for c in name if c.isalnum() or c == "-")
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator(control_plane, tmp_path, request):
    """The operator as a real subprocess (``cells-operator run``) for the test's duration."""
    proc = OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log")
    proc.start()
    yield proc
    proc.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        kept = keep_log(proc.logfile, request.node.nodeid)
        print(f"\n----- operator log (tail; the whole log is kept in {kept}) -----\n" + proc.log_tail(40))
        print("\n----- control plane logs (tail) -----\n" + control_plane.all_log_tails(20))


def keep_log(path: Path, nodeid: str) -> Path:
    """Copy a failed test's whole log to ``.test-logs/<test>/`` in the checkout, where it outlives pytest's
    temporary folders and a CI job can collect it."""
    import re
    import shutil

    target = ROOT / ".test-logs" / re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)
    target.mkdir(parents=True, exist_ok=True)
    if path.exists():
        shutil.copy(path, target / path.name)
    return target / path.name
