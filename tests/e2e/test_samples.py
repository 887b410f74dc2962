"""The shipped samples converge on whatever cluster KUBECONFIG names."""

import json
import tomllib
from pathlib import Path

from tests.support.cells import wait_ready

SAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "samples"


def test_samples_become_ready_and_publish_records(kubectl, namespace, running_operator):
    kubectl("apply", "-n", namespace, "-f", str(SAMPLES / "cells.yaml"))
    for name in ("legacy", "cell-2", "cell-3"):
        wait_ready(kubectl, "cell", name, namespace, timeout=120)
    kubectl("wait", "--for=condition=Ready", "cells", "--all", "-n", namespace, "--timeout=60s")
    cm = kubectl.get("configmap", "cells-topology", namespace)
    config = tomllib.loads(cm["data"]["config.toml"])
    assert [c["id"] for c in config["cells"]] == [1, 2, 3]
    legacy = config["cells"][0]
    assert legacy["sequence_ranges"] == [{"minval": 1, "maxval": 999_999_999_999}]
    topology = json.loads(cm["data"]["topology.json"])
    assert topology["first_cell_id"] == 1
