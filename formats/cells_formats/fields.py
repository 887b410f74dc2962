"""The fields a published cell record is made of: its state, its sequence ranges, its address.

Shared by the operator (which validates and publishes them) and the data plane (which reads them and
routes to the addresses): one definition each, so the two can never disagree about what a valid
address or range is.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

# Upstream IDs are 64-bit: 1 sign bit (always 0), 6 reserved bits (always 0) and a 57-bit sequence
# (Topology Service design document, "Sequence ranges"). Every range lies within 1 ... 2^57-1.
SEQUENCE_BITS = 57
MAX_SEQUENCE_VALUE: int = 2**SEQUENCE_BITS - 1  # annotated: typeshed types int ** int as Any
# A host name (RFC 1123 labels, at most 253 characters): the host part of a cell's address.
HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)


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


class SequenceRange(BaseModel):
    """An inclusive interval ``[minval, maxval]`` of primary-key values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    minval: int
    maxval: int

    def problem(self) -> str | None:
        """Why this range is unusable, or None. Kept out of the model's validation so that a user's
        inverted range parses and gets its own status reason instead of a generic parse error."""
        if self.minval < 1:
            return f"minval must be >= 1, got {self.minval}"
        if self.maxval > MAX_SEQUENCE_VALUE:
            return f"maxval must be <= 2^57-1 ({MAX_SEQUENCE_VALUE}, the 57-bit ID sequence), got {self.maxval}"
        if self.maxval < self.minval:
            return f"maxval ({self.maxval}) is smaller than minval ({self.minval})"
        return None

    @property
    def size(self) -> int:
        return self.maxval - self.minval + 1

    def overlaps(self, other: SequenceRange) -> bool:
        return self.minval <= other.maxval and other.minval <= self.maxval

    def __str__(self) -> str:
        return f"[{self.minval}, {self.maxval}]"


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
