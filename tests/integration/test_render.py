"""``cells-operator render`` predicts what the operator publishes on a real API server, byte for byte.

The operator is started only after the change is applied, so that its first reconcile pass sees the whole
change at once -- as render plans it, and as a GitOps sync followed by one reconcile does. The only thing
render cannot know is the uid the API server gives a *new* object; it renders ``new:<name>`` there, and
the comparison maps those (and nothing else) to the real uids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from cells_formats.records import TOPOLOGY_JSON, content_hash
from tests.support.cells import cell_manifest, wait_ready
from tests.support.kubectl import Kubectl, eventually
from tests.support.operator import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "deploy" / "samples"
CONFIGMAPS = ("cells-topology", "cells-router-rules")


def cli(*args: str, kubeconfig: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run(
        [sys.executable, "-m", "cells_operator.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def published(kubectl: Kubectl, namespace: str) -> dict[str, dict]:
    return {name: kubectl.get("configmap", name, namespace) for name in CONFIGMAPS}


def rendered_configmaps(text: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(text)}


def uids(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    items = kubectl.get("cells,routingrules", namespace=namespace)["items"]
    return {o["metadata"]["name"]: o["metadata"]["uid"] for o in items}


def assert_render_equals_published(
    rendered: dict[str, dict], live: dict[str, dict], new_objects: dict[str, str]
) -> None:
    """Data, labels and annotations equal; ``new_objects`` (name -> real uid) are the only placeholders."""
    assert set(rendered) == set(live)
    for name, cm in live.items():
        mine = rendered[name]
        data = dict(mine["data"])
        for obj, uid in new_objects.items():
            data = {k: v.replace(f'"new:{obj}"', json.dumps(uid)) for k, v in data.items()}
        assert data == cm["data"], f"{name}: rendered data differs from what the operator published"
        assert mine["metadata"]["labels"] == cm["metadata"]["labels"]
        annotations = dict(mine["metadata"].get("annotations") or {})
        if TOPOLOGY_JSON in data:
            # the content hash is over topology.json, which holds the uids: hash the text with the real ones
            annotations["cells.dev/content-hash"] = content_hash(data[TOPOLOGY_JSON])
        assert annotations == (cm["metadata"].get("annotations") or {})


def wait_all_ready(kubectl: Kubectl, namespace: str, cells: list[str], rules: list[str]) -> None:
    for name in cells:
        wait_ready(kubectl, "cell", name, namespace)
    for name in rules:
        wait_ready(kubectl, "routingrule", name, namespace)


def test_render_equals_what_the_operator_publishes(kubectl, namespace, control_plane, tmp_path):
    files = [str(SAMPLES / "cells.yaml"), str(SAMPLES / "routingrules.yaml")]
    render_args = ["render", "-n", namespace] + [a for f in files for a in ("-f", f)]
    before = cli(*render_args)
    assert before.returncode == 0, before.stderr

    for f in files:
        kubectl("apply", "-n", namespace, "-f", f)
    operator = OperatorProcess(control_plane.kubeconfig, tmp_path / "operator-1.log", ["--standalone", "-n", namespace])
    operator.start()
    try:
        wait_all_ready(
            kubectl,
            namespace,
            ["legacy", "cell-2", "cell-3"],
            ["force-cell", "session-cookie", "path-cell-id", "catch-all"],
        )
        live = published(kubectl, namespace)
    finally:
        operator.stop()
    real = uids(kubectl, namespace)
    # 1. From the files as they are in Git: equal, new objects' uids aside.
    assert_render_equals_published(rendered_configmaps(before.stdout), live, real)

    # 2. From the objects as the API server served them to the operator's first pass (uids, generations,
    #    creation timestamps; no status yet): equal byte for byte, no mapping at all.
    served = kubectl.get("cells,routingrules", namespace=namespace)
    for item in served["items"]:
        item.pop("status", None)
    exact = cli("render", "-f", "-", stdin=json.dumps(served))
    assert exact.returncode == 0, exact.stderr
    assert_render_equals_published(rendered_configmaps(exact.stdout), live, {})

    # 3. A pull request on top of what is published: cell-3 pruned, cell-4 added, force-cell dropped, a
    #    pattern edited, a new rule proxying to the new cell.
    published_yaml = tmp_path / "published.yaml"
    published_yaml.write_text(kubectl("get", "configmap", *CONFIGMAPS, "-n", namespace, "-o", "yaml").stdout)
    cells = list(yaml.safe_load_all((SAMPLES / "cells.yaml").read_text()))
    cells = [c for c in cells if c["metadata"]["name"] != "cell-3"]
    cells.append({**cells[1], "metadata": {"name": "cell-4"}, "spec": {"id": 4, "address": "127.0.0.1:18004"}})
    rules = [
        r
        for r in yaml.safe_load_all((SAMPLES / "routingrules.yaml").read_text())
        if r["metadata"]["name"] != "force-cell"
    ]
    path_rule = next(r for r in rules if r["metadata"]["name"] == "path-cell-id")
    path_rule["spec"]["match"]["regexValue"] = r"^/api/v4/cells/(?<cell_id>\d+)(/|$)"
    rules.append(
        {
            "apiVersion": "cells.dev/v1alpha1",
            "kind": "RoutingRule",
            "metadata": {"name": "pin-cell-4"},
            "spec": {
                "ruleset": "session_token",
                "priority": 5,
                "match": {"type": "header", "regexName": "^x-pin-cell$", "regexValue": "^4$"},
                "action": "proxy",
                "proxy": {"cellRef": "cell-4"},
            },
        }
    )
    change = tmp_path / "change.yaml"
    change.write_text("---\n".join(yaml.safe_dump(d) for d in cells + rules))

    expected = cli("render", "-n", namespace, "-f", str(change), "--prune", "--records", str(published_yaml))
    assert expected.returncode == 0, expected.stderr
    # --from-cluster reads the same records through the kubeconfig
    from_cluster = cli(
        "render", "-n", namespace, "-f", str(change), "--prune", "--from-cluster", kubeconfig=control_plane.kubeconfig
    )
    assert from_cluster.returncode == 0, from_cluster.stderr
    assert from_cluster.stdout == expected.stdout
    verdict = cli(
        "validate", "-n", namespace, "-f", str(change), "--prune", "--from-cluster", kubeconfig=control_plane.kubeconfig
    )
    assert verdict.returncode == 0, verdict.stdout
    assert "Cell 'cell-3': the input no longer declares it: pruning deletes it" in verdict.stdout

    # The sync: applied and pruned while the operator is down, so its next pass sees the whole change.
    kubectl("apply", "-n", namespace, "-f", str(change))
    kubectl("delete", "cell", "cell-3", "-n", namespace, "--wait=false")
    kubectl("delete", "routingrule", "force-cell", "-n", namespace)
    operator = OperatorProcess(control_plane.kubeconfig, tmp_path / "operator-2.log", ["--standalone", "-n", namespace])
    operator.start()
    try:
        wait_all_ready(
            kubectl, namespace, ["legacy", "cell-2", "cell-4"], ["session-cookie", "path-cell-id", "pin-cell-4"]
        )
        eventually(lambda: kubectl.get_or_none("cell", "cell-3", namespace) is None, message="cell-3 deleted")
        live = published(kubectl, namespace)
    finally:
        operator.stop()
    real = uids(kubectl, namespace)
    assert kubectl.get("routingrule", "path-cell-id", namespace)["metadata"]["generation"] == 2
    assert_render_equals_published(
        rendered_configmaps(expected.stdout), live, {n: real[n] for n in ("cell-4", "pin-cell-4")}
    )

    # route on what is really published (kubectl's List of both ConfigMaps)
    now = tmp_path / "now.yaml"
    now.write_text(kubectl("get", "configmap", *CONFIGMAPS, "-n", namespace, "-o", "yaml").stdout)
    routed = cli("route", "--rules", str(now), "--records", str(now), "--header", "X-Pin-Cell=4", "/")
    assert routed.returncode == 0, routed.stdout
    assert "position 0 (rule 'pin-cell-4'): MATCH, action proxy" in routed.stdout
    assert routed.stdout.endswith("=> proxied to 127.0.0.1:18004 without classification\n")


def test_from_cluster_sees_what_is_allocated_and_the_kubectl_plugin(kubectl, namespace, operator, tmp_path):
    kubectl("apply", "-n", namespace, "-f", str(SAMPLES / "cells.yaml"))
    wait_all_ready(kubectl, namespace, ["legacy", "cell-2", "cell-3"], [])
    dup = tmp_path / "dup.yaml"
    dup.write_text(yaml.safe_dump(cell_manifest("again", 2, address="h:1")))
    # `kubectl cells` finds the kubectl-cells script next to this Python on PATH (the plugin convention)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env["KUBECONFIG"] = str(kubectl.kubeconfig)
    proc = subprocess.run(
        [kubectl.binary, "cells", "validate", "-n", namespace, "-f", str(dup), "--from-cluster"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Cell 'again' is refused (DuplicateId): id 2 is already registered by cell 'cell-2'" in proc.stdout
    # and the same admission would refuse it on the real API server? Not here: this operator has no webhook;
    # the status path says the same words.
    kubectl("apply", "-n", namespace, "-f", str(dup))
    stalled = eventually(
        lambda: next(
            (
                c
                for c in (kubectl.get("cell", "again", namespace).get("status") or {}).get("conditions") or []
                if c["type"] == "Stalled" and c["status"] == "True"
            ),
            None,
        ),
        message="cell 'again' Stalled",
    )
    assert stalled["reason"] == "DuplicateId"
    assert stalled["message"].startswith("id 2 is already registered by cell 'cell-2'")
