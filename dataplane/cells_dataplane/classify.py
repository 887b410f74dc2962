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
import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from cells_formats.records import CellRecord, Topology

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
    if _integral(raw):
        return TYPE_NUMBERS.get(int(raw))  # 3 or 3.0: JSON does not tell them apart
    return raw if raw in TYPES else None


def _found(cell: CellRecord | None, value: str) -> Answer:
    if cell is None:
        return not_found(value)
    return Answer(200, {"action": "PROXY", "proxy": {"address": cell.address}}, cell)


# ClassifyRequest fields this service knows (the protobuf JSON mapping accepts the proto name and the
# lowerCamelCase JSON name; both are these). Anything else is refused as the protobuf JSON mapping does.
FIELDS = ("type", "value")
# The longest ``value`` accepted: far above any session prefix or cell id, far below the body limit.
MAX_VALUE_CHARS = 1024


def classify(snapshot: Snapshot, request: Any) -> Answer:
    if not isinstance(request, dict):
        return invalid("request body must be a JSON object")
    unknown = sorted(k for k in request if k not in FIELDS)
    if unknown:
        return invalid(f"unknown field {json.dumps(unknown[0])} in ClassifyRequest (known: type, value)")
    raw_type, value = request.get("type"), request.get("value")
    kind = classify_type(raw_type)
    if kind is None:
        names = ", ".join(f"{name} ({number})" for number, name in TYPE_NUMBERS.items())
        return invalid(f"type must be one of {names}, got {_shown(raw_type)}")
    if kind == "CELL_ID" and _integral(value):
        value = str(int(value))  # a JSON number as a CELL_ID: accepted, as it always was
    if value is not None and not isinstance(value, str):
        return invalid(f"value must be a string, got {_json_type(value)}")
    if value is not None and len(value) > MAX_VALUE_CHARS:
        return invalid(f"value is {len(value)} characters long, at most {MAX_VALUE_CHARS} are accepted")
    if kind == "FIRST_CELL":
        return _found(snapshot.first, "" if value is None else value)
    if value is None or value == "":
        return invalid(f"{kind} needs a value")
    if kind == "SESSION_PREFIX":
        return _found(snapshot.by_prefix.get(value), value)
    if not re.fullmatch(r"-?[0-9]{1,19}", value):
        return invalid(f"CELL_ID value {_shown(value)} is not an integer")
    return _found(snapshot.by_id.get(int(value)), value)


def _integral(value: object) -> TypeGuard[int | float]:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _shown(value: Any, limit: int = 80) -> str:
    """A JSON value for an error message, cut short: a hostile value is never echoed whole."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."
