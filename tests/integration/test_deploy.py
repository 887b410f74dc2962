"""Issue 6: the deploy/ manifests on the real API server -- rendered, accepted, and the RBAC of deploy/base
proven by running the operator as its ServiceAccount."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from tests.support.cells import cell_manifest, wait_ready
from tests.support.kubectl import Kubectl
from tests.support.operator import OperatorProcess
from tests.support.rules import SAMPLE_SPECS

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["deploy/base", "deploy/overlays/dev", "deploy/overlays/production", "deploy/dataplane", "deploy/samples"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_is_accepted_by_the_api_server(kubectl, overlay):
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(ROOT / overlay)).stdout) if d]
    assert docs
    # A server-side dry run creates nothing, so what the objects depend on must exist for real first:
    # their namespaces, and CRDs the overlay ships (none today; kept for overlays that add some).
    for ns in ("cells", "cells-system"):
        kubectl("create", "namespace", ns, check=False)
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    if crds:
        kubectl.apply(crds)
        kubectl.wait_crds([c["metadata"]["name"] for c in crds])
    served = kubectl("api-versions").stdout.split()
    # cert-manager's CRDs (deploy/webhook) cannot be installed here (no network); its objects are checked
    # by test_webhook_component_is_wired instead. Everything else goes through the real API server.
    docs = [d for d in docs if not d["apiVersion"].startswith("cert-manager.io/")]
    for doc in docs:
        if doc["apiVersion"] == "policy/v1" and "policy/v1" not in served:
            # K8S_VERSION=1.20.2 (outside the support window, ADR 0012) serves PodDisruptionBudget only
            # as policy/v1beta1 (same fields for what we use); supported releases get policy/v1 as written.
            doc["apiVersion"] = "policy/v1beta1"
    result = kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    )
    assert result.stdout.count("(server dry run)") == len(docs)


def test_webhook_component_is_wired(kubectl):
    """The production overlay's webhooks reach the operator: Service -> pod port, Certificate -> Secret ->
    mount -> CELLS_WEBHOOK_CERT_DIR, and cert-manager's CA injection names the Certificate."""
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(ROOT / "deploy/overlays/production")).stdout) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    (workload,) = by_kind["Deployment"]
    assert "StatefulSet" not in by_kind and "KopfPeering" not in by_kind  # the Lease replaced kopf peering
    assert (
        workload["spec"]["replicas"] == 2
        and "--leader-elect" in workload["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    pod = workload["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CELLS_WEBHOOK_LISTEN"] == "0.0.0.0:9443"
    port = next(p for p in container["ports"] if p["name"] == "webhook")
    assert port["containerPort"] == 9443
    mount = next(m for m in container["volumeMounts"] if m["name"] == "webhook-cert")
    assert mount["mountPath"] == env["CELLS_WEBHOOK_CERT_DIR"]
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-cert")
    (certificate,) = by_kind["Certificate"]
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    service = next(s for s in by_kind["Service"] if s["metadata"]["name"] == "cells-operator-webhook")
    assert service["spec"]["ports"][0]["targetPort"] == "webhook"
    ns, name = service["metadata"]["namespace"], service["metadata"]["name"]
    assert f"{name}.{ns}.svc" in certificate["spec"]["dnsNames"]
    (issuer,) = by_kind["Issuer"]
    assert certificate["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    cert_ref = f"{certificate['metadata']['namespace']}/{certificate['metadata']['name']}"
    configurations = by_kind["ValidatingWebhookConfiguration"] + by_kind["MutatingWebhookConfiguration"]
    assert len(configurations) == 2
    for configuration in configurations:
        assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == cert_ref
        for hook in configuration["webhooks"]:
            target = hook["clientConfig"]["service"]
            assert (target["namespace"], target["name"], target["port"]) == (ns, name, 443)
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    assert {"protocol": "TCP", "port": 9443} in policy["spec"]["ingress"][0]["ports"]


def test_monitoring_renders(kubectl):
    rendered = list(yaml.safe_load_all(kubectl("kustomize", str(ROOT / "deploy" / "monitoring")).stdout))
    assert {o["kind"] for o in rendered} == {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
    dashboard = next(o for o in rendered if o["kind"] == "ConfigMap")
    assert json.loads(dashboard["data"]["cells-operator.json"])["uid"] == "cells-operator"


def test_crds_apply_client_and_server_side(kubectl):
    kubectl("apply", "-f", str(ROOT / "crds"))
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))


def sa_kubeconfig(kubectl: Kubectl, token: str, path: Path) -> Path:
    cfg = json.loads(kubectl("config", "view", "--raw", "-o", "json").stdout)
    for user in cfg["users"]:
        user["user"] = {"token": token}
    path.write_text(json.dumps(cfg))
    return path


def test_operator_runs_with_exactly_the_rbac_of_deploy_base(kubectl, control_plane, tmp_path, request):
    kubectl("apply", "-k", str(ROOT / "deploy" / "base"))
    token = kubectl("create", "token", "cells-operator", "-n", "cells-system", "--duration=1h").stdout.strip()
    as_sa = Kubectl(sa_kubeconfig(kubectl, token, tmp_path / "sa-kubeconfig"))

    # --leader-elect: the Lease in cells-system is part of what the base RBAC must allow
    operator = OperatorProcess(as_sa.kubeconfig, tmp_path / "operator.log", ["--leader-elect", "-n", "cells"])
    operator.start()
    try:
        kubectl.apply([cell_manifest("cell-1", 1, firstCell=True), cell_manifest("cell-2", 2)], "cells")
        kubectl.apply(
            [
                {"apiVersion": "cells.dev/v1alpha1", "kind": "RoutingRule", "metadata": {"name": n}, "spec": s}
                for n, s in SAMPLE_SPECS.items()
            ],
            "cells",
        )
        for name in ("cell-1", "cell-2"):
            wait_ready(kubectl, "cell", name, "cells", timeout=90)
        for name in SAMPLE_SPECS:
            wait_ready(kubectl, "routingrule", name, "cells", timeout=90)
        assert kubectl.get("configmap", "cells-router-rules", "cells")["data"]["session_token.json"]
        # deleting goes through the finalizer, with the same identity
        kubectl("delete", "cell", "cell-2", "-n", "cells", "--timeout=60s")
        assert "Forbidden" not in operator.log_text() and "forbidden" not in operator.log_text()
        lease = kubectl.get("lease", "cells-operator", "cells-system")
        assert lease["spec"]["holderIdentity"].startswith(socket.gethostname())
    finally:
        operator.stop()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            print(operator.log_tail(80))

    denied = [
        ("get", "secrets", "-n", "cells"),
        ("get", "secrets", "-n", "cells-system"),
        ("create", "configmap", "outside", "-n", "default"),
        ("get", "cells", "-n", "default"),
        ("delete", "cell", "cell-1", "-n", "cells"),
        ("get", "pods", "-n", "cells"),
    ]
    for args in denied:
        proc = as_sa(*args, check=False)
        assert proc.returncode != 0 and "forbidden" in proc.stderr.lower(), (args, proc.stderr)
    can_i = as_sa("auth", "can-i", "create", "configmaps", "-n", "cells", check=False)
    assert can_i.stdout.strip() == "yes"
