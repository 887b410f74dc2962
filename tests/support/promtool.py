"""promtool, to validate and unit-test the alert rules: on PATH, else extracted once from Debian's
`prometheus` package into the cache (downloaded, never installed: no Prometheus service is started)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cells_devtools.devcluster.assets import cache_root


def find_promtool() -> Path:
    on_path = shutil.which("promtool")
    if on_path:
        return Path(on_path)
    root = cache_root() / "promtool"
    binary = root / "usr" / "bin" / "promtool"
    if binary.exists():
        return binary
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    download = ["apt-get", "download", "prometheus"]
    if subprocess.run(download, cwd=debs, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(download, cwd=debs, check=True, capture_output=True)
    deb = sorted(debs.glob("prometheus_*.deb"))[-1]
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return binary
