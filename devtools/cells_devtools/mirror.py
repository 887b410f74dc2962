"""Mirror the operator's ConfigMaps into files, as a kubelet does for a mounted volume.

Development tooling, not part of the data plane (which reads only files): for running the data plane
outside Kubernetes (``make demo``, tests, local development): every
``--interval`` seconds, each key of ``cells-topology`` and ``cells-router-rules`` in ``--namespace`` is
written to ``<dir>/<configmap>/<key>`` -- atomically (temp file + rename), and only when it changed.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
from pathlib import Path

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from cells_operator.kube import load_api_client

log = logging.getLogger("cells_mirror")
CONFIGMAPS = ("cells-topology", "cells-router-rules")


class Mirror:
    def __init__(
        self, namespace: str, target: Path, configmaps: tuple[str, ...] = CONFIGMAPS, core: CoreV1Api | None = None
    ):
        self.namespace = namespace
        self.target = Path(target)
        self.configmaps = configmaps
        self.core = core or CoreV1Api(load_api_client())
        self.writes = 0
        self._stop = threading.Event()

    def sync_once(self) -> None:
        for name in self.configmaps:
            try:
                data = self.core.read_namespaced_config_map(name, self.namespace).data or {}
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            folder = self.target / name
            folder.mkdir(parents=True, exist_ok=True)
            for key, value in data.items():
                path = folder / key
                if path.exists() and path.read_text() == value:
                    continue
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
                with os.fdopen(fd, "w") as fh:
                    fh.write(value)
                os.replace(tmp, path)
                self.writes += 1

    def run(self, interval: float = 1.0) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:  # keep mirroring through API hiccups
                log.warning("mirror sync failed: %s", exc)
            self._stop.wait(interval)

    def stop(self) -> None:
        self._stop.set()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cells-dev mirror", description=__doc__)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    Mirror(args.namespace, Path(args.dir)).run(args.interval)


if __name__ == "__main__":
    main()
