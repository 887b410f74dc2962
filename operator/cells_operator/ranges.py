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

from cells_formats.fields import MAX_SEQUENCE_VALUE, SequenceRange

# The smallest range a real cell may hold, from the public Cells design (10^11 IDs).
DEFAULT_SEQUENCE_SIZE = 100_000_000_000


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
