"""e2e: cluster-agnostic. Runs against CELLS_TEST_KUBECONFIG (kind, `make cluster`, any cluster) or,
when unset, a fresh local control plane. With CELLS_E2E_OPERATOR=in-cluster the operator is the one
deployed from deploy/ (the kind path); otherwise the suite runs it as a local process."""

import os

import pytest

from tests.support.dataplane import DataPlane
from tests.support.operator import OperatorProcess


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def running_operator(control_plane, tmp_path):
    if os.environ.get("CELLS_E2E_OPERATOR") == "in-cluster":
        yield None
        return
    proc = OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def data_plane(kubectl, namespace, running_operator, tmp_path, request):
    """A :class:`DataPlane` for the test to build in ``namespace``, with the operator running; stopped after
    the test (or a failed setup), printing every process's log tail when the test failed."""
    plane = DataPlane(kubectl, namespace, tmp_path)
    yield plane
    rep = getattr(request.node, "rep_call", None)
    plane.stop(show_logs=rep is not None and rep.failed)
