"""Issue 2: a real control plane, a CRD installed with kubectl, the operator's status patch observed."""

from pathlib import Path

from tests.support.cells import cell_manifest, wait_ready
from tests.support.kubectl import eventually

ROOT = Path(__file__).resolve().parents[2]


def test_control_plane_is_real_and_rbac_enforced(control_plane, kubectl):
    assert kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    # etcd is the storage: the API server reports it healthy
    assert kubectl("get", "--raw", "/readyz/etcd").stdout.strip() == "ok"
    # RBAC is on: an anonymous identity cannot list namespaces
    anon = kubectl("--token=not-a-valid-token", "get", "namespaces", check=False)
    assert anon.returncode != 0 and ("Unauthorized" in anon.stderr or "forbidden" in anon.stderr.lower())


def test_crds_installed_with_kubectl_and_explained(kubectl):
    kubectl("apply", "-f", str(ROOT / "crds"))
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    # The API server publishes a new CRD's OpenAPI schema a few seconds after it is established.
    explained = eventually(
        lambda: kubectl("explain", "cell.spec.sessionPrefix", check=False).stdout,
        timeout=60,
        message="kubectl explain cell.spec.sessionPrefix",
    )
    assert "session" in explained.lower()
    names = kubectl("api-resources", "--api-group=cells.dev", "-o", "name").stdout.split()
    assert sorted(names) == ["cells.cells.dev", "routingrules.cells.dev"]


def test_operator_patches_status_through_the_api(kubectl, namespace, operator):
    kubectl.apply(cell_manifest("hello", 1), namespace)
    obj = wait_ready(kubectl, "cell", "hello", namespace)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert obj["status"]["sessionPrefix"] == "cell-1"
    # `kubectl wait` understands the condition (kstatus / GitOps tooling rely on the same)
    kubectl("wait", "--for=condition=Ready", "cell/hello", "-n", namespace, "--timeout=30s")


def test_namespace_deletion_works_with_controller_manager(kubectl, control_plane):
    kubectl("create", "namespace", "gc-probe")
    kubectl("delete", "namespace", "gc-probe", "--timeout=60s")
    assert kubectl("get", "namespace", "gc-probe", check=False).returncode != 0
