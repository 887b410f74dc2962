"""The ``Cell`` resource: its spec as a frozen model, and the checks one cell can fail on its own.

Checks that need the other cells (duplicate ids, overlapping ranges, a second first cell) live in
:mod:`cells_operator.topology`, which sees the whole namespace at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from cells_formats.fields import MAX_SEQUENCE_VALUE, CellState, SequenceRange, address_problem

from .ranges import DEFAULT_SEQUENCE_SIZE

GROUP = "cells.dev"
VERSION = "v1alpha1"
PLURAL = "cells"
KIND = "Cell"

# A cell id is an int64 in the Topology Service's CellInfo; it is not drawn from the sequence space.
MAX_CELL_ID = 2**63 - 1
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# The CRD's pattern for addresses (Cell.spec.address): a cheap first line of defence at the API server;
# cells_formats.fields.address_problem is the full check, shared by admission, planner and router.
ADDRESS_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?)(:[0-9]{1,5})?$"


# Schema only (json_schema_extra): what the API server refuses on top of the model. The model parses these
# on purpose, so that the planner and admission name the problem with its own reason (check_cell_spec) on
# the paths that bypass the API server's validation (offline review, records read back).
_ADDRESS_SCHEMA: dict[str, Any] = {"minLength": 1, "maxLength": 261, "pattern": ADDRESS_PATTERN}
_SESSION_PREFIX_SCHEMA: dict[str, Any] = {"maxLength": 63, "pattern": DNS_LABEL.pattern}
_ID_BOUNDS: dict[str, Any] = {"minimum": 1, "maximum": MAX_SEQUENCE_VALUE}
_RANGE_SCHEMA: dict[str, Any] = {
    "x-kubernetes-validations": [
        {"rule": "self.minval <= self.maxval", "message": "(InvalidRange) maxval is smaller than minval"},
    ],
    "properties": {
        "minval": {**_ID_BOUNDS, "description": "First ID of the range (inclusive), 1 ... 2^57-1."},
        "maxval": {
            **_ID_BOUNDS,
            "description": "Last ID of the range (inclusive), at most 2^57-1: IDs are 1 sign bit, 6 reserved "
            "bits and a 57-bit sequence.",
        },
    },
}


class CellSpec(BaseModel):
    """``Cell.spec`` as the API server stores it (camelCase), after CRD defaulting.

    The field descriptions are what ``kubectl explain cell.spec`` prints: ``crds/cells.dev_cells.yaml``
    is generated from this model (``cells-operator manifests crds``, ADR 0017).
    """

    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)

    id: int = Field(
        ge=1,
        le=MAX_CELL_ID,
        description="Cell id, unique in the namespace. Never changes once the cell is registered.",
    )
    address: str = Field(
        description="Where the HTTP router sends this cell's requests, as GitLab's Topology Service config.toml "
        "writes it: a hostname (cell-2.gitlab.example), an IPv4 address or a bracketed IPv6 address "
        "([2001:db8::1]), each with an optional :port. The reference router uses https (port 443) for an "
        "address without a port and http with one, unless its --upstream-scheme says otherwise.",
        json_schema_extra=_ADDRESS_SCHEMA,
    )
    session_prefix: str | None = Field(
        None,
        description='Prefix of the session cookies this cell issues (followed by "-"), so the router can send a '
        "logged-in user back to it. A lowercase DNS label, unique in the namespace. Defaults to cell-<id>.",
        json_schema_extra=_SESSION_PREFIX_SCHEMA,
    )
    sequence_ranges: tuple[Annotated[SequenceRange, Field(json_schema_extra=_RANGE_SCHEMA)], ...] | None = Field(
        None,
        description="Explicit primary-key ranges. Without it the operator allocates one range of sequenceSize "
        "IDs above the highest range ever used. Ranges never overlap other cells' or retired ranges; "
        "allocated ranges may only grow (append a range), never change or shrink.",
        # Bounds the cost of the CEL rules (the API server refuses unbounded ones); 100 ranges of 10^11
        # ids is 10^13 ids for one cell.
        json_schema_extra={"maxItems": 100},
    )
    sequence_size: int = Field(
        default=DEFAULT_SEQUENCE_SIZE,
        ge=1,
        description=f"Size of an allocated range. At least {DEFAULT_SEQUENCE_SIZE} (10^11) unless "
        "skipRangeValidation is true.",
    )
    skip_range_validation: bool = Field(
        False,
        description="Allow ranges smaller than 10^11 IDs (short-lived test cells only). Published as "
        "skip_range_validation = true in each of the cell's [[cells.sequence_ranges]] tables.",
    )
    state: CellState = Field(
        CellState.ACTIVE,
        description="Active: routable, receives new organisations. Draining: still routable, receives no new "
        "organisations, never the first cell. Offline: registered with its ranges kept, never the first cell "
        "nor a proxy cellRef target. Every state stays in config.toml (GitLab's Topology Service has no "
        "states and classifies every cell it lists).",
    )
    first_cell: bool = Field(
        False,
        description="The cell FIRST_CELL classification returns (new organisations and requests without a "
        "session). At most one per namespace; must be Active.",
    )
    ring: int | None = Field(None, description="Deployment ring, informational.")

    @property
    def effective_session_prefix(self) -> str:
        return self.session_prefix or f"cell-{self.id}"


# What one Cell can say about itself across updates, checked by the API server with no webhook running
# (ADR 0012): the CRD's object-level CEL rules. "Registered" is what the operator published in status
# (registeredId, sequenceRanges), the same records the planner and the webhook compare with; a spec left
# unchanged (a status write, a label) always passes. Numbers cannot go into the messages: the API server
# estimates string(int) as unbounded and refuses the CRD, so the registered id is named by where to read it.
CELL_VALIDATIONS: tuple[dict[str, str], ...] = (
    {
        "rule": "self.spec.id == oldSelf.spec.id || !has(oldSelf.status) || !has(oldSelf.status.registeredId) "
        "|| self.spec.id == oldSelf.status.registeredId",
        "messageExpression": '"Cell \'" + self.metadata.name + "\' is refused (IdImmutable): id cannot change '
        'once registered; set it back to status.registeredId or create a new Cell"',
        "reason": "FieldValueForbidden",
        "fieldPath": ".spec.id",
    },
    {
        "rule": "self.spec == oldSelf.spec || !has(self.spec.sequenceRanges) || !has(oldSelf.status) || "
        "!has(oldSelf.status.sequenceRanges) || oldSelf.status.sequenceRanges.all(r, "
        "self.spec.sequenceRanges.exists(s, s.minval == r.minval && s.maxval == r.maxval))",
        "messageExpression": '"Cell \'" + self.metadata.name + "\' is refused (RangeImmutable): allocated '
        "ranges never change or shrink: sequenceRanges must keep every range of status.sequenceRanges "
        '(append a range to grow)"',
        "reason": "FieldValueForbidden",
        "fieldPath": ".spec.sequenceRanges",
    },
)


@dataclass(frozen=True)
class Problem:
    """Why a resource cannot be accepted: a CamelCase ``reason`` for machines, a ``message`` for people."""

    reason: str
    message: str


def parse_cell_spec(spec: dict[str, Any]) -> tuple[CellSpec | None, Problem | None]:
    """Parse a raw spec; a schema problem comes back as ``InvalidSpec`` with the fields named."""
    try:
        return CellSpec.model_validate(spec), None
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            parts.append(f"spec.{loc}: {err['msg']}")
        return None, Problem("InvalidSpec", "; ".join(parts))


def check_cell_spec(spec: CellSpec) -> Problem | None:
    """Everything one cell can get wrong on its own, each with its own reason."""
    if problem := address_problem(spec.address):
        return Problem("InvalidAddress", problem)
    prefix = spec.effective_session_prefix
    if not DNS_LABEL.match(prefix):
        return Problem(
            "InvalidSessionPrefix",
            f"sessionPrefix {prefix!r} must be a lowercase DNS label (a-z, 0-9, '-', at most 63 characters)",
        )
    if spec.first_cell and spec.state is not CellState.ACTIVE:
        return Problem(
            "FirstCellNotActive",
            f"a {spec.state.value} cell cannot be the first cell: move firstCell to an Active cell first",
        )
    for r in spec.sequence_ranges or ():
        if problem := r.problem():
            return Problem("InvalidRange", f"sequenceRanges {r}: {problem}")
    if not spec.skip_range_validation:
        if spec.sequence_size < DEFAULT_SEQUENCE_SIZE:
            return Problem(
                "RangeTooSmall",
                f"sequenceSize {spec.sequence_size} is below the minimum of {DEFAULT_SEQUENCE_SIZE} "
                "(set skipRangeValidation: true for short-lived test cells)",
            )
        for r in spec.sequence_ranges or ():
            if r.size < DEFAULT_SEQUENCE_SIZE:
                return Problem(
                    "RangeTooSmall",
                    f"sequenceRanges {r} holds {r.size} IDs, below the minimum of {DEFAULT_SEQUENCE_SIZE} "
                    "(set skipRangeValidation: true for short-lived test cells)",
                )
    return None
