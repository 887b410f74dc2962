"""The pure parts of the control-plane build: release selection, the generated wrapper module, etcd's line.

The build itself is exercised for real by the integration tier (it runs on what it built); these pin
the text the build generates, on the real ``go.mod`` shapes of a kubernetes release.
"""

from __future__ import annotations

import pytest

from cells_devtools.devcluster import assets
from cells_devtools.devcluster.assets import (
    AssetError,
    etcd_line,
    is_legacy,
    k8s_cache_dir,
    k8s_version,
    newest_patch,
    staging_replacements,
    wrapper_gomod,
)

# The shape of k8s.io/kubernetes' go.mod (abridged from v1.37.2): staging modules at v0.0.0, replaced by folders.
KUBERNETES_GOMOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tgo.etcd.io/etcd/client/v3 v3.7.0
\tk8s.io/api v0.0.0
\tk8s.io/apiserver v0.0.0
\tk8s.io/klog/v2 v2.140.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiserver => ./staging/src/k8s.io/apiserver
\tk8s.io/cri-streaming => ./staging/src/k8s.io/cri-streaming
)
"""


def test_version_defaults_and_is_selected_by_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("K8S_VERSION", raising=False)
    assert k8s_version() == assets.DEFAULT_K8S_VERSION
    monkeypatch.setenv("K8S_VERSION", "")  # what `make` exports when the variable is left empty
    assert k8s_version() == assets.DEFAULT_K8S_VERSION
    monkeypatch.setenv("K8S_VERSION", "v1.37.2")
    assert k8s_version() == "1.37.2"
    monkeypatch.setenv("CELLS_OPERATOR_CACHE", str(tmp_path))
    assert k8s_cache_dir() == tmp_path / "k8s-v1.37.2"  # one cache folder per release
    monkeypatch.setenv("K8S_VERSION", "latest")
    with pytest.raises(AssetError, match="not a Kubernetes release"):
        k8s_version()


def test_only_old_releases_take_the_debian_path():
    assert is_legacy("1.20.2")
    assert not is_legacy(assets.CURRENT_K8S_VERSION)
    with pytest.raises(AssetError, match="predates the Go-module build"):
        assets.build_kubernetes_legacy("1.22.0", log=lambda m: None)


def test_staging_modules_map_to_the_release_s_v0_versions():
    assert staging_replacements(KUBERNETES_GOMOD, "1.37.2") == {
        "k8s.io/api": "v0.37.2",
        "k8s.io/apiserver": "v0.37.2",
        "k8s.io/cri-streaming": "v0.37.2",
    }
    with pytest.raises(AssetError, match="no staging replacements"):
        staging_replacements("module example.com/x\n", "1.37.2")


def test_wrapper_module_requires_the_release_and_replaces_each_staging_module():
    text = wrapper_gomod("1.37.2", "1.26.0", staging_replacements(KUBERNETES_GOMOD, "1.37.2"))
    lines = [line.strip() for line in text.splitlines()]
    assert "go 1.26.0" in lines
    assert "require k8s.io/kubernetes v1.37.2" in lines
    assert "k8s.io/api => k8s.io/api v0.37.2" in lines
    assert "k8s.io/cri-streaming => k8s.io/cri-streaming v0.37.2" in lines
    assert "./staging" not in text


def test_etcd_of_the_release_line_newest_patch():
    deps = 'dependencies:\n  - name: "etcd"\n    version: 3.7.0\n    refPaths:\n    - path: x\n'
    assert etcd_line(deps) == "3.7.0"
    listed = ["v3.6.16", "v3.7.0-rc.0", "v3.7.0", "v3.7.1", "v3.7.3", "v3.8.0-alpha.0", "v3.8.1"]
    assert newest_patch(listed, "3.7.0") == "3.7.3"  # same minor, no pre-releases, never the next minor
    assert newest_patch(["v3.6.1"], "3.7.0") == "3.7.0"  # nothing newer listed: the release's own
    with pytest.raises(AssetError, match="names no etcd"):
        etcd_line("dependencies: []\n")


def test_pinned_release_is_in_the_support_window():
    assert assets.minor_of(assets.CURRENT_K8S_VERSION) == max(assets.SUPPORTED_MINORS)
    assert assets.CURRENT_K8S_VERSION in assets.ETCD_FOR
