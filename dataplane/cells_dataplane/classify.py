"""Classification against the Topology Service records (pure): which cell serves this?

Answers mirror GitLab's Topology Service as its REST gateway renders them (ADR 0010,
docs/compatibility.md): a request is ``ClassifyRequest`` in the protobuf JSON mapping, so ``type`` is the
``ClassifyType`` enum by name (``"CELL_ID"``) or by number (``3``); the answer is
``{"action": "PROXY", "proxy": {"address": ...}}``; an unknown cell is gRPC NOT_FOUND rendered as HTTP 404
``{"code": 5, "message": "cell not found: \\"<value>\\"", "details": []}``; a malformed request is
INVALID_ARGUMENT, HTTP 400 ``{"code": 3, "message": ..., "details": []}``.

The real service reads ``config.toml``, which lists every registered cell whatever its state, and knows no
states: it classifies Draining and Offline cells like Active ones. So does this one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cells_operator.topology import CellRecord, Topology

NOT_FOUND = 5
INVALID_ARGUMENT = 3
# ClassifyType of the Topology Service protos (classify_service.proto): UNSPECIFIED = 0 is never valid.
TYPE_NUMBERS = {1: "FIRST_CELL", 2: "SESSION_PREFIX", 3: "CELL_ID"}
TYPES = tuple(TYPE_NUMBERS.values())


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


def status_body(code: int, message: str) -> dict[str, Any]:
    """A ``google.rpc.Status`` as the REST gateway renders it."""
    return {"code": code, "message": message, "details": []}


def not_found(value: str) -> Answer:
    # Go's %q of the value: a double-quoted string with JSON-compatible escapes for what we meet.
    return Answer(404, status_body(NOT_FOUND, f"cell not found: {json.dumps(value, ensure_ascii=False)}"))


def invalid(message: str) -> Answer:
    return Answer(400, status_body(INVALID_ARGUMENT, message))


def classify_type(raw: Any) -> str | None:
    """The ClassifyType name for an enum name or number, as the protobuf JSON mapping accepts both."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return TYPE_NUMBERS.get(raw)
    return raw if raw in TYPES else None


def _found(cell: CellRecord | None, value: str) -> Answer:
    if cell is None:
        return not_found(value)
    return Answer(200, {"action": "PROXY", "proxy": {"address": cell.address}}, cell)


def classify(snapshot: Snapshot, request: Any) -> Answer:
    if not isinstance(request, dict):
        return invalid("request body must be a JSON object")
    raw_type, value = request.get("type"), request.get("value")
    kind = classify_type(raw_type)
    if kind is None:
        names = ", ".join(f"{name} ({number})" for number, name in TYPE_NUMBERS.items())
        return invalid(f"type must be one of {names}, got {raw_type!r}")
    if kind == "FIRST_CELL":
        return _found(snapshot.first, "" if value is None else str(value))
    if value is None or value == "":
        return invalid(f"{kind} needs a value")
    if kind == "SESSION_PREFIX":
        return _found(snapshot.by_prefix.get(str(value)), str(value))
    try:
        cell_id = int(str(value))
    except ValueError:
        return invalid(f"CELL_ID value {value!r} is not an integer")
    return _found(snapshot.by_id.get(cell_id), str(value))
