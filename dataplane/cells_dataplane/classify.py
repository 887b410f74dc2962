"""Classification against the Topology Service records (pure): which cell serves this?

Answers mirror the Topology Service's REST gateway: ``{"action": "PROXY", "proxy": {"address": ...}}``,
an unknown (or Offline) cell is gRPC NOT_FOUND rendered as HTTP 404 ``{"code": 5, "message": ...}``, and
a malformed request is INVALID_ARGUMENT, HTTP 400 ``{"code": 3, "message": ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cells_operator.topology import CellRecord, Topology

NOT_FOUND = 5
INVALID_ARGUMENT = 3
TYPES = ("SESSION_PREFIX", "CELL_ID", "FIRST_CELL")


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    cell: CellRecord | None = None


class Snapshot:
    """An immutable view of one records revision with the lookups classification needs."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self.by_id = {c.id: c for c in topology.cells}
        self.by_prefix = {c.session_prefix: c for c in topology.cells}
        self.first = topology.first_cell

    @property
    def revision(self) -> int:
        return self.topology.revision


def _found(cell: CellRecord | None, what: str) -> Answer:
    if cell is None or not cell.routable:
        return Answer(404, {"code": NOT_FOUND, "message": f"cell not found: {what}"})
    return Answer(200, {"action": "PROXY", "proxy": {"address": cell.address}}, cell)


def classify(snapshot: Snapshot, request: Any) -> Answer:
    if not isinstance(request, dict):
        return Answer(400, {"code": INVALID_ARGUMENT, "message": "request body must be a JSON object"})
    kind, value = request.get("type"), request.get("value")
    if kind not in TYPES:
        return Answer(
            400, {"code": INVALID_ARGUMENT, "message": f"type must be one of {', '.join(TYPES)}, got {kind!r}"}
        )
    if kind == "FIRST_CELL":
        return _found(snapshot.first, "FIRST_CELL")
    if value is None or value == "":
        return Answer(400, {"code": INVALID_ARGUMENT, "message": f"{kind} needs a value"})
    if kind == "SESSION_PREFIX":
        return _found(snapshot.by_prefix.get(str(value)), f"SESSION_PREFIX {value}")
    try:
        cell_id = int(str(value))
    except ValueError:
        return Answer(400, {"code": INVALID_ARGUMENT, "message": f"CELL_ID value {value!r} is not an integer"})
    return _found(snapshot.by_id.get(cell_id), f"CELL_ID {cell_id}")
