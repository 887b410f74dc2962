import pytest

from cells_formats.fields import MAX_SEQUENCE_VALUE, SequenceRange
from cells_operator.ranges import (
    DEFAULT_SEQUENCE_SIZE,
    RangeExhausted,
    allocate,
    find_overlap,
    first_internal_overlap,
    remaining_capacity,
)


def R(a, b):
    return SequenceRange(minval=a, maxval=b)


def test_first_allocation_starts_at_one():
    assert allocate(DEFAULT_SEQUENCE_SIZE, []) == R(1, DEFAULT_SEQUENCE_SIZE)


def test_allocation_starts_above_the_highest_range_including_retired():
    taken = [R(1, 10**12 - 1), R(2 * 10**12, 3 * 10**12)]
    assert allocate(100, taken) == R(3 * 10**12 + 1, 3 * 10**12 + 100)


def test_allocation_never_fills_holes_below_the_highest_range():
    # A hole between two ranges is never handed out: ranges only ever grow upwards.
    got = allocate(10, [R(1, 10), R(1000, 1010)])
    assert got.minval == 1011


def test_the_sequence_space_is_57_bits():
    # Upstream IDs: 1 sign bit, 6 reserved bits, 57 bits of sequence.
    assert MAX_SEQUENCE_VALUE == 2**57 - 1 == 144_115_188_075_855_871
    assert R(1, 2**57 - 1).problem() is None
    assert "2^57-1" in R(1, 2**57).problem()
    assert "2^57-1" in R(2**57, 2**57).problem()


def test_allocation_at_the_edge_of_the_57_bit_space():
    # A range ending exactly at 2^57-1 is the last one; a range needing one ID more is exhausted.
    below = R(1, 2**57 - 1 - DEFAULT_SEQUENCE_SIZE)
    assert allocate(DEFAULT_SEQUENCE_SIZE, [below]) == R(2**57 - DEFAULT_SEQUENCE_SIZE, 2**57 - 1)
    with pytest.raises(RangeExhausted, match=r"57-bit ID sequence ends at 144115188075855871"):
        allocate(DEFAULT_SEQUENCE_SIZE + 1, [below])
    assert remaining_capacity([below]) == DEFAULT_SEQUENCE_SIZE
    assert remaining_capacity([]) == 2**57 - 1


def test_exhaustion_near_the_top():
    top = R(MAX_SEQUENCE_VALUE - 99, MAX_SEQUENCE_VALUE - 50)
    assert allocate(50, [top]) == R(MAX_SEQUENCE_VALUE - 49, MAX_SEQUENCE_VALUE)
    with pytest.raises(RangeExhausted, match=r"ID sequence"):
        allocate(51, [top])
    assert remaining_capacity([top]) == 50


def test_range_problems():
    assert R(1, 1).problem() is None
    assert "smaller than minval" in R(10, 5).problem()
    assert "minval must be >= 1" in R(0, 5).problem()
    assert "2^57-1" in R(1, MAX_SEQUENCE_VALUE + 1).problem()


def test_overlap_detection_is_inclusive():
    assert R(1, 10).overlaps(R(10, 20))
    assert not R(1, 10).overlaps(R(11, 20))
    assert find_overlap(R(5, 6), [R(1, 4), R(6, 9)]) == R(6, 9)
    assert first_internal_overlap([R(20, 30), R(1, 10), R(10, 15)]) == (R(1, 10), R(10, 15))
    assert first_internal_overlap([R(1, 10), R(11, 20)]) is None


def test_invalid_size():
    with pytest.raises(ValueError):
        allocate(0, [])
