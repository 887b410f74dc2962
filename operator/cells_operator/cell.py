"""The ``Cell`` resource: its spec as a frozen model, and the checks one cell can fail on its own.

Checks that need the other cells (duplicate ids, overlapping ranges, a second first cell) live in
:mod:`cells_operator.topology`, which sees the whole namespace at once.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from .ranges import DEFAULT_SEQUENCE_SIZE, MAX_SEQUENCE_VALUE, SequenceRange

GROUP = "cells.dev"
VERSION = "v1alpha1"
PLURAL = "cells"
KIND = "Cell"

# A cell id is an int64 in the Topology Service's CellInfo; it is not drawn from the sequence space.
MAX_CELL_ID = 2**63 - 1
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)
# The CRD's pattern for addresses (Cell.spec.address): a cheap first line of defence at the API server;
# address_problem below is the full check, shared by admission and planner.
ADDRESS_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?)(:[0-9]{1,5})?$"


class CellState(StrEnum):
    """Lifecycle of a cell. Ours, not the Cells design's (which defines none):

    - ``Active``: routable, may receive new organisations, may be the first cell;
    - ``Draining``: routable, receives no new organisations, never the first cell;
    - ``Offline``: registered and its ranges kept, but not routable: never the first cell, never a
      ``proxy.cellRef`` target.

    Every state stays in ``config.toml``: GitLab's Topology Service knows no states, and a cell's id and
    ranges are permanent facts of its record (ADR 0010). "Routable" is the control plane's notion only.
    """

    ACTIVE = "Active"
    DRAINING = "Draining"
    OFFLINE = "Offline"

    @property
    def routable(self) -> bool:
        return self is not CellState.OFFLINE


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


def split_address(address: str) -> tuple[str, int | None]:
    """``(host, port)`` of a valid address; port None when the address has none. IPv6 hosts keep brackets."""
    if address.startswith("["):
        host, _, rest = address.partition("]")
        return host + "]", int(rest[1:]) if rest else None
    host, sep, port = address.rpartition(":")
    return (host, int(port)) if sep else (address, None)


def address_problem(address: str) -> str | None:
    """Addresses as upstream writes them: a hostname (``cell-2.gitlab.example``, as GitLab.com's cells are
    configured), an IPv4 address or a bracketed IPv6 address, each with an optional ``:port`` (local
    setups use ``host:port``). Which scheme and port a bare host means is the router's choice (ADR 0010)."""
    if address.startswith("["):
        inner, bracket, rest = address[1:].partition("]")
        if not bracket:
            return f"address {address!r} has an unclosed '[' (IPv6 hosts are written [::1] or [::1]:8080)"
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return f"address {address!r} has an invalid IPv6 host"
        if rest and not rest.startswith(":"):
            return f"address {address!r}: only ':port' may follow the bracketed IPv6 host"
        port = rest[1:] if rest else None
    else:
        if address.count(":") > 1:
            return f"address {address!r}: IPv6 hosts must be in brackets, e.g. [::1] or [::1]:8080"
        host, sep, port_text = address.partition(":")
        port = port_text if sep else None
        if not host:
            return f"address {address!r} has no host"
        if re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                return f"address {address!r} has an invalid IPv4 host {host!r}"
        elif not HOSTNAME.match(host):
            return f"address {address!r} has an invalid host {host!r} (a hostname, IPv4 or [IPv6] address)"
    if port is not None and (not port.isdigit() or not 1 <= int(port) <= 65535):
        return f"address {address!r} has an invalid port {port!r} (1-65535)"
    return None


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
