"""Sequence ranges: the integer intervals each cell's primary keys are drawn from.

IDs must be unique across the whole cluster of cells so that data can move between cells later.
Every cell therefore owns ranges that no other cell ever uses -- not even after it is deleted: the
ranges of deleted cells are *retired* and never handed out again. An allocated range never moves
or shrinks; a cell that runs out gains another range.

Allocation is "bump above the highest range ever used": simple to reason about, never fragments,
and the same answer whichever replica computes it, because its only input is the published records.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

# Upstream IDs are 64-bit: 1 sign bit (always 0), 6 reserved bits (always 0) and a 57-bit sequence
# (Topology Service design document, "Sequence ranges"). Every range lies within 1 ... 2^57-1.
SEQUENCE_BITS = 57
MAX_SEQUENCE_VALUE = 2**SEQUENCE_BITS - 1
# The smallest range a real cell may hold, from the public Cells design (10^11 IDs).
DEFAULT_SEQUENCE_SIZE = 100_000_000_000


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


class RangeExhausted(Exception):
    """No room is left below 2^57 for a range of the requested size."""


def find_overlap(candidate: SequenceRange, taken: Iterable[SequenceRange]) -> SequenceRange | None:
    """The first range in ``taken`` that ``candidate`` overlaps, if any."""
    return next((r for r in taken if candidate.overlaps(r)), None)


def first_internal_overlap(ranges: list[SequenceRange]) -> tuple[SequenceRange, SequenceRange] | None:
    """Two ranges of one list that overlap each other, if any."""
    ordered = sorted(ranges, key=lambda r: (r.minval, r.maxval))
    for a, b in itertools.pairwise(ordered):
        if a.overlaps(b):
            return a, b
    return None


def allocate(size: int, taken: Iterable[SequenceRange]) -> SequenceRange:
    """The next range of ``size`` IDs, starting just above the highest range ever used.

    ``taken`` must include retired ranges: they are never reused.
    """
    if size < 1:
        raise ValueError(f"range size must be >= 1, got {size}")
    start = max((r.maxval for r in taken), default=0) + 1
    end = start + size - 1
    if end > MAX_SEQUENCE_VALUE:
        raise RangeExhausted(
            f"no room for {size} IDs above {start - 1}: the 57-bit ID sequence ends at {MAX_SEQUENCE_VALUE}"
        )
    return SequenceRange(minval=start, maxval=end)


def remaining_capacity(taken: Iterable[SequenceRange]) -> int:
    """How many IDs are left above the highest range ever used (for exhaustion alerts)."""
    return MAX_SEQUENCE_VALUE - max((r.maxval for r in taken), default=0)
