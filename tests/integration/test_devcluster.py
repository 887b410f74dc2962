"""The local control plane itself: the selected release, side-by-side instances, clean shutdown, clear errors,
envtest lookup."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from cells_devtools.devcluster.assets import AssetError, find_assets, is_legacy, k8s_cache_dir, k8s_version
from cells_devtools.devcluster.cluster import ClusterError, LocalCluster, _pid_alive


def test_control_plane_runs_the_selected_release(control_plane, kubectl):
    """The server, kubectl and etcd are the release ``K8S_VERSION`` selected, and report it (ADR 0012).

    A module build stamps the version with ``-ldflags``; without the stamps ``/version`` would say
    v0.0.0-master and every version-dependent flag in ``cluster.py`` would take the wrong branch.
    """
    if not hasattr(control_plane, "server_version"):
        pytest.skip("CELLS_TEST_KUBECONFIG names an external cluster: its release is not ours to choose")
    assets = find_assets(build=False)
    served = json.loads(kubectl("get", "--raw", "/version").stdout)["gitVersion"]
    binary = subprocess.run([str(assets.kube_apiserver), "--version"], capture_output=True, text=True).stdout.split()
    assert served == binary[-1]
    assert control_plane.server_version == tuple(int(x) for x in served.lstrip("v").split(".")[:2])
    if os.environ.get("KUBEBUILDER_ASSETS"):
        return  # envtest's binaries: whatever release the folder holds
    version = k8s_version()
    assert served == f"v{version}"
    if is_legacy(version):
        return  # Debian's 1.20 path: etcd 3.4 and kubectl come from Debian, not from the build
    client = json.loads(kubectl("version", "--client", "-o", "json").stdout)["clientVersion"]["gitVersion"]
    assert client == served
    build = json.loads((k8s_cache_dir(version) / "bin" / "BUILD.json").read_text())
    etcd = subprocess.run([str(assets.etcd), "--version"], capture_output=True, text=True).stdout
    assert f"etcd Version: {build['etcd']}" in etcd
    assert build["kubernetes"] == version and build["seconds"] > 0


def test_second_instance_side_by_side_and_clean_shutdown(control_plane, tmp_path):
    other = LocalCluster.create(tmp_path / "second", quiet=True)
    other.start()
    try:
        assert other.apiserver_port != getattr(control_plane, "apiserver_port", None)
        assert other.ready()
        pids = dict(other.pids)
        assert set(pids) >= {"etcd", "kube-apiserver"}
    finally:
        other.stop()
    assert not any(_pid_alive(pid) for pid in pids.values())
    assert (tmp_path / "second" / "logs" / "kube-apiserver.log").stat().st_size > 0  # logs kept


def test_port_taken_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cluster = LocalCluster.create(tmp_path / "taken", apiserver_port=port, quiet=True)
        with pytest.raises(ClusterError, match=f"port {port}.*in use"):
            cluster.start()
    assert not cluster.pids


def test_missing_binary_is_a_clear_error(tmp_path):
    assets = find_assets(build=False)
    broken = replace(assets, kube_apiserver=tmp_path / "nope" / "kube-apiserver")
    with pytest.raises(AssetError, match="kube-apiserver binary missing"):
        LocalCluster.create(tmp_path / "missing", assets=broken, quiet=True).start()


def test_kubebuilder_assets_are_used_first(tmp_path, monkeypatch):
    """The envtest convention: a folder with etcd, kube-apiserver and kubectl (no controller-manager)."""
    assets = find_assets(build=False)
    folder = tmp_path / "envtest"
    folder.mkdir()
    for name, path in (("etcd", assets.etcd), ("kube-apiserver", assets.kube_apiserver), ("kubectl", assets.kubectl)):
        (folder / name).symlink_to(path)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(folder))
    found = find_assets(build=False, log=lambda m: None)
    assert found.kube_apiserver == folder / "kube-apiserver"
    assert found.etcd == folder / "etcd" and found.kubectl == folder / "kubectl"
    assert found.kube_controller_manager is None
    cluster = LocalCluster.create(tmp_path / "envtest-cluster", assets=found, quiet=True)
    cluster.start()
    try:
        assert cluster.ready() and "kube-controller-manager" not in cluster.pids
    finally:
        cluster.stop()


def test_kubebuilder_assets_without_apiserver_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    with pytest.raises(AssetError, match="no executable kube-apiserver"):
        find_assets(build=False, log=lambda m: None)


def test_cli_cluster_up_status_down(tmp_path):
    env = {**os.environ}
    cli = [sys.executable, "-m", "cells_devtools.cli", "cluster"]
    up = subprocess.run(
        [*cli, "up", "--dir", str(tmp_path / "c")], capture_output=True, text=True, env=env, timeout=240
    )
    assert up.returncode == 0, up.stderr
    kubeconfig = tmp_path / "c" / "kubeconfig"
    assert up.stdout.strip() == f"export KUBECONFIG={kubeconfig}"
    try:
        again = subprocess.run([*cli, "up", "--dir", str(tmp_path / "c")], capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "already running" in again.stderr  # idempotent
        kubectl = str(find_assets(build=False).kubectl)
        ready = subprocess.run(
            [kubectl, f"--kubeconfig={kubeconfig}", "get", "--raw", "/readyz"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ready.stdout.strip() == "ok"
        status = subprocess.run([*cli, "status", "--dir", str(tmp_path / "c")], capture_output=True, text=True)
        assert status.returncode == 0 and "running at https://127.0.0.1:" in status.stdout
    finally:
        down = subprocess.run([*cli, "down", "--dir", str(tmp_path / "c")], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0
    assert not Path(tmp_path / "c" / "state.json").exists()


def test_apiserver_restarts_on_the_same_port_back_to_back(tmp_path):
    """The fault tests kill and restart the apiserver on its port. A killed process keeps the listening
    socket for a few tens of milliseconds, and 1.37 binds within that time ("bind: address already in
    use"), so ``restart_apiserver`` waits for the port. Three restarts in a row, each one serving."""
    cluster = LocalCluster.create(tmp_path / "restart", quiet=True)
    cluster.start()
    try:
        port = cluster.apiserver_port
        for _ in range(3):
            old = cluster.pids["kube-apiserver"]
            cluster.restart_apiserver()
            assert cluster.pids["kube-apiserver"] != old and not _pid_alive(old)
            assert cluster.apiserver_port == port and cluster.ready()
    finally:
        cluster.stop()
