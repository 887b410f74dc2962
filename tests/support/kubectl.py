"""A tiny kubectl wrapper for tests: real CLI, real API server, JSON in and out."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cells_devtools.devcluster.assets import find_kubectl


def merge_patch_args(kind: str, name: str, patch: dict, subresource: str | None = None) -> list[str]:
    """``kubectl patch`` arguments for a JSON merge patch (RFC 7386: ``None`` removes a field)."""
    target = [f"--subresource={subresource}"] if subresource else []
    return ["patch", kind, name, *target, "--type=merge", "-p", json.dumps(patch)]


class KubectlError(RuntimeError):
    def __init__(self, args, proc):
        super().__init__(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        self.stderr = proc.stderr
        self.returncode = proc.returncode


class Kubectl:
    def __init__(self, kubeconfig: Path):
        self.kubeconfig = Path(kubeconfig)
        self.binary = str(find_kubectl(log=lambda m: None))

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.binary, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise KubectlError(args, proc)
        return proc

    def apply(self, manifest: str | dict | list, namespace: str | None = None) -> None:
        if not isinstance(manifest, str):
            items = manifest if isinstance(manifest, list) else [manifest]
            manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        self(*args, input=manifest)

    def get(self, kind: str, name: str | None = None, namespace: str | None = None) -> Any:
        args = ["get", kind] + ([name] if name else []) + (["-n", namespace] if namespace else []) + ["-o", "json"]
        return json.loads(self(*args).stdout)

    def get_or_none(self, kind: str, name: str, namespace: str) -> Any:
        proc = self("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise KubectlError(("get", kind, name), proc)
        return json.loads(proc.stdout)

    def merge_patch(
        self, kind: str, name: str, namespace: str, patch: dict, subresource: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Merge ``patch`` into one object, as a user's ``kubectl patch --type=merge`` does."""
        return self(*merge_patch_args(kind, name, patch, subresource), "-n", namespace, check=check)

    def wait_crds(self, names: list[str], timeout: float = 60) -> None:
        self("wait", "--for=condition=Established", f"--timeout={int(timeout)}s", *[f"crd/{n}" for n in names])


def eventually(
    probe: Callable[[], Any], timeout: float = 60.0, interval: float = 0.25, message: str = "condition"
) -> Any:
    """Poll ``probe`` until it returns a truthy value; fail with the last value or error.

    A convergence helper, not a speed assertion: the timeout is generous and only bounds a hang.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except (AssertionError, KubectlError, KeyError) as exc:
            last = exc  # not there yet: keep polling, report the last error if it never comes
        time.sleep(interval)
    raise AssertionError(f"{message} not reached within {timeout}s; last: {last!r}")
