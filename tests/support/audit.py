"""Count API write requests from the local control plane's audit log (Metadata level, writes only)."""

from __future__ import annotations

import json
from pathlib import Path


def audit_writes(
    logdir: Path, namespace: str, resource: str | None = None, name: str | None = None, subresource: str | None = "*"
) -> list[dict]:
    path = Path(logdir) / "audit.log"
    out = []
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        ref = event.get("objectRef") or {}
        if event.get("stage") != "ResponseComplete" or ref.get("namespace") != namespace:
            continue
        if resource and ref.get("resource") != resource:
            continue
        if name and ref.get("name") != name:
            continue
        if subresource != "*" and ref.get("subresource") != subresource:
            continue
        if (
            event.get("verb") in ("create", "update", "patch", "delete")
            and (event.get("responseStatus") or {}).get("code", 200) < 400
        ):
            out.append(event)
    return out
