"""The planner: every invariant of the records, without a cluster."""

import itertools

from cells_formats.fields import CellState, SequenceRange
from cells_formats.records import Topology
from cells_operator.ranges import DEFAULT_SEQUENCE_SIZE as SIZE
from cells_operator.topology import CellObject, plan_topology


def cell(name, id_, created="2026-01-01T00:00:00Z", deleting=False, uid=None, **spec):
    return CellObject(
        name=name,
        uid=uid or f"uid-{name}",
        spec={"id": id_, "address": f"{name}:8080", **spec},
        deleting=deleting,
        created=created,
    )


def R(a, b):
    return SequenceRange(minval=a, maxval=b)


def plan(cells, previous=None, blockers=None):
    return plan_topology(previous or Topology(), cells, blockers)


def reason(p, name):
    v = p.verdicts[name]
    return v.problem.reason if v.problem else None


def test_allocates_disjoint_ranges_in_creation_order():
    p = plan([cell("b", 2, created="2"), cell("a", 1, created="1")])
    assert p.records.record("a").sequence_ranges == (R(1, SIZE),)
    assert p.records.record("b").sequence_ranges == (R(SIZE + 1, 2 * SIZE),)
    assert p.records.revision == 1
    assert {c.reason for c in p.changes} == {"Registered"}


def test_explicit_ranges_are_honoured_before_allocation_in_the_same_batch():
    legacy = cell("legacy", 1, created="2", firstCell=True, sequenceRanges=[{"minval": 1, "maxval": 10**12 - 1}])
    p = plan([cell("new", 2, created="1"), legacy])
    assert reason(p, "legacy") is None and reason(p, "new") is None
    assert p.records.record("new").sequence_ranges == (R(10**12, 10**12 + SIZE - 1),)


def test_unchanged_input_is_a_fixed_point():
    p1 = plan([cell("a", 1), cell("b", 2)])
    p2 = plan([cell("a", 1), cell("b", 2)], p1.records)
    assert p2.records == p1.records  # same revision: nothing to write
    assert p2.changes == []


def test_restart_never_reallocates():
    p1 = plan([cell("a", 1)])
    # the operator restarts: all it knows is the published records
    p2 = plan([cell("a", 1), cell("b", 2)], p1.records)
    assert p2.records.record("a").sequence_ranges == p1.records.record("a").sequence_ranges


def test_duplicate_id_first_registered_keeps_its_place():
    p1 = plan([cell("a", 1)])
    p2 = plan([cell("a", 1), cell("z", 1, created="0")], p1.records)  # older timestamp, but registered later
    assert reason(p2, "z") == "DuplicateId"
    assert "'a'" in p2.verdicts["z"].problem.message
    assert p2.records.record("z") is None


def test_duplicate_session_prefix():
    p = plan([cell("a", 1, created="1"), cell("b", 2, created="2", sessionPrefix="cell-1")])
    assert reason(p, "b") == "DuplicateSessionPrefix"


def test_second_first_cell_rejected():
    p = plan([cell("a", 1, created="1", firstCell=True), cell("b", 2, created="2", firstCell=True)])
    assert reason(p, "b") == "DuplicateFirstCell"
    assert p.records.first_cell.name == "a"


def test_first_cell_moves_in_one_reconcile_whatever_the_order():
    p1 = plan([cell("a", 1, created="1", firstCell=True), cell("b", 2, created="2")])
    p2 = plan([cell("a", 1, created="1"), cell("b", 2, created="2", firstCell=True)], p1.records)
    assert reason(p2, "a") is None and reason(p2, "b") is None
    assert p2.records.first_cell.name == "b"


def test_explicit_range_overlapping_another_cell():
    p = plan([cell("a", 1, created="1"), cell("b", 2, created="2", sequenceRanges=[{"minval": 5, "maxval": 5 + SIZE}])])
    # b is explicit so it is placed first; a then allocates above it
    assert reason(p, "b") is None
    p2 = plan(
        [
            cell("a", 1, created="1"),
            cell("b", 2, created="2", sequenceRanges=[{"minval": 5, "maxval": 5 + SIZE}]),
            cell("c", 3, sequenceRanges=[{"minval": 10, "maxval": 10 + SIZE}]),
        ],
        p.records,
    )
    assert reason(p2, "c") == "RangeOverlap" and "of cell 'b'" in p2.verdicts["c"].problem.message


def test_explicit_ranges_overlapping_each_other():
    p = plan([cell("a", 1, sequenceRanges=[{"minval": 1, "maxval": SIZE}, {"minval": SIZE, "maxval": 3 * SIZE}])])
    assert reason(p, "a") == "RangeOverlap"


def test_retired_ranges_are_never_reused():
    p1 = plan([cell("a", 1, created="1"), cell("b", 2, created="2")])
    p2 = plan([cell("a", 1, created="1"), cell("b", 2, created="2", deleting=True)], p1.records)
    assert p2.verdicts["b"].release
    assert [(r.minval, r.cell_name) for r in p2.records.retired_ranges] == [(SIZE + 1, "b")]
    p3 = plan([cell("a", 1), cell("c", 3)], p2.records)
    assert p3.records.record("c").sequence_ranges == (R(2 * SIZE + 1, 3 * SIZE),)
    p4 = plan([cell("a", 1), cell("d", 4, sequenceRanges=[{"minval": SIZE + 5, "maxval": 3 * SIZE}])], p2.records)
    assert reason(p4, "d") == "RangeOverlap" and "retired" in p4.verdicts["d"].problem.message


def test_range_too_small_unless_skipped():
    assert reason(plan([cell("a", 1, sequenceSize=1000)]), "a") == "RangeTooSmall"
    assert reason(plan([cell("a", 1, sequenceRanges=[{"minval": 1, "maxval": 10}])]), "a") == "RangeTooSmall"
    ok = plan([cell("a", 1, sequenceSize=1000, skipRangeValidation=True)])
    assert ok.records.record("a").sequence_ranges == (R(1, 1000),)


def test_skip_range_validation_reaches_the_record_and_its_change_is_an_update():
    small = {"minval": 10**13, "maxval": 10**13 + 99}
    p1 = plan([cell("t", 7, sequenceRanges=[small], skipRangeValidation=True)])
    assert reason(p1, "t") is None
    assert p1.records.record("t").skip_range_validation is True
    p2 = plan([cell("t", 7, sequenceRanges=[small], skipRangeValidation=False)], p1.records)
    assert reason(p2, "t") == "RangeTooSmall"
    assert p2.records.record("t").skip_range_validation is True  # the published version stays
    big = {"minval": 10**13, "maxval": 10**13 + SIZE - 1}
    p3 = plan([cell("t", 7, sequenceRanges=[big])], p1.records)
    assert reason(p3, "t") == "RangeImmutable"  # the small range must be kept
    p4 = plan([cell("t", 7, sequenceRanges=[small], skipRangeValidation=True, address="moved:1")], p1.records)
    assert [c.reason for c in p4.changes] == ["Updated"]


def test_inverted_range():
    p = plan([cell("a", 1, skipRangeValidation=True, sequenceRanges=[{"minval": 10, "maxval": 5}])])
    assert reason(p, "a") == "InvalidRange"


def test_id_is_immutable_and_old_record_stays_published():
    p1 = plan([cell("a", 1)])
    p2 = plan([cell("a", 7, address="elsewhere:1")], p1.records)
    assert reason(p2, "a") == "IdImmutable"
    assert p2.records.record("a") == p1.records.record("a")
    assert p2.records == p1.records


def test_allocated_range_cannot_change_but_can_grow():
    p1 = plan([cell("a", 1)])
    moved = plan([cell("a", 1, sequenceRanges=[{"minval": 5 * SIZE, "maxval": 6 * SIZE}])], p1.records)
    assert reason(moved, "a") == "RangeImmutable"
    grown = plan(
        [cell("a", 1, sequenceRanges=[{"minval": 1, "maxval": SIZE}, {"minval": 5 * SIZE, "maxval": 6 * SIZE}])],
        p1.records,
    )
    assert reason(grown, "a") is None
    assert grown.records.record("a").sequence_ranges == (R(1, SIZE), R(5 * SIZE, 6 * SIZE))
    assert any(c.reason == "RangeAdded" for c in grown.changes)


def test_fixing_input_clears_the_problem():
    p1 = plan([cell("a", 1, created="1"), cell("b", 1, created="2")])
    assert reason(p1, "b") == "DuplicateId"
    p2 = plan([cell("a", 1, created="1"), cell("b", 2, created="2")], p1.records)
    assert reason(p2, "b") is None


def test_address_and_state_edits_reach_the_records():
    p1 = plan([cell("a", 1)])
    p2 = plan([cell("a", 1, address="new-host:9000", state="Offline")], p1.records)
    rec = p2.records.record("a")
    assert (rec.address, rec.state) == ("new-host:9000", CellState.OFFLINE)
    assert p2.records.revision == p1.records.revision + 1
    assert any(c.reason == "Updated" and "address" in c.message for c in p2.changes)


def test_draining_first_cell_rejected():
    p = plan([cell("a", 1, firstCell=True, state="Draining")])
    assert reason(p, "a") == "FirstCellNotActive"


def test_invalid_address_and_prefix_and_schema():
    assert reason(plan([cell("a", 1, address="under_score.example")]), "a") == "InvalidAddress"
    assert reason(plan([cell("a", 1, address="host:99999")]), "a") == "InvalidAddress"
    assert reason(plan([cell("a", 1, sessionPrefix="Cell_1")]), "a") == "InvalidSessionPrefix"
    assert reason(plan([CellObject("a", "u", {"id": "x", "address": "h:1"})]), "a") == "InvalidSpec"


def test_deletion_blocked_by_rules_and_first_cell():
    p1 = plan([cell("a", 1, created="1", firstCell=True), cell("b", 2, created="2")])
    p2 = plan(
        [cell("a", 1, created="1", firstCell=True, deleting=True), cell("b", 2, created="2", deleting=True)],
        p1.records,
        blockers={"b": ["RoutingRule 'pin' proxies to it"]},
    )
    assert reason(p2, "a") == "DeletionBlocked" and "first cell" in p2.verdicts["a"].problem.message
    assert reason(p2, "b") == "DeletionBlocked" and "'pin'" in p2.verdicts["b"].problem.message
    assert not p2.verdicts["a"].release and not p2.verdicts["b"].release
    assert p2.records == p1.records


def test_unregistered_cell_deletes_immediately():
    p = plan([cell("a", 1, address="bad", deleting=True)])
    assert p.verdicts["a"].release


def test_orphaned_record_is_retired():
    p1 = plan([cell("a", 1), cell("b", 2)])
    p2 = plan([cell("a", 1)], p1.records)  # b vanished without its finalizer
    assert p2.records.record("b") is None
    assert [r.cell_name for r in p2.records.retired_ranges] == ["b"]


def test_recreated_cell_with_same_name_gets_a_new_range():
    p1 = plan([cell("a", 1, uid="one")])
    p2 = plan([cell("a", 1, uid="two")], p1.records)
    assert p2.records.record("a").sequence_ranges == (R(SIZE + 1, 2 * SIZE),)
    assert p2.records.retired_ranges[0].minval == 1


def test_exhaustion_is_reported_not_raised():
    top = {"minval": 2**57 - 10, "maxval": 2**57 - 1}
    p = plan([cell("a", 1, created="1", sequenceRanges=[top], skipRangeValidation=True), cell("b", 2, created="2")])
    assert reason(p, "b") == "RangeExhausted"
    assert "57-bit" in p.verdicts["b"].problem.message
    assert p.records.record("b") is None  # nothing published for it


def test_the_last_range_of_the_57_bit_space_is_allocated_and_the_next_is_exhausted():
    below = {"minval": 1, "maxval": 2**57 - 1 - SIZE}
    legacy = cell("legacy", 1, created="1", sequenceRanges=[below])
    p = plan([legacy, cell("last", 2, created="2")])
    assert p.records.record("last").sequence_ranges == (R(2**57 - SIZE, 2**57 - 1),)
    p2 = plan([legacy, cell("last", 2, created="2"), cell("one-more", 3, created="3")], p.records)
    assert reason(p2, "one-more") == "RangeExhausted"
    assert p2.records.record("last").sequence_ranges == (R(2**57 - SIZE, 2**57 - 1),)


def test_explicit_range_beyond_the_57_bit_space_is_invalid():
    p = plan([cell("a", 1, sequenceRanges=[{"minval": 2**57 - SIZE, "maxval": 2**57}])])
    assert reason(p, "a") == "InvalidRange"
    assert "2^57-1" in p.verdicts["a"].problem.message


def test_fifty_cells_get_fifty_disjoint_ranges():
    p = plan([cell(f"c{i}", i, created=f"{i:03}") for i in range(1, 51)])
    ranges = sorted(r for c in p.records.cells for r in [(c.sequence_ranges[0].minval, c.sequence_ranges[0].maxval)])
    assert len(ranges) == 50
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))


def test_lost_records_are_recovered_from_cell_status_not_reallocated():
    p1 = plan([cell("a", 1, created="1"), cell("b", 2, created="2")])
    b_ranges = p1.records.record("b").sequence_ranges
    # the records ConfigMap was deleted by hand; cell b's status still reports its ranges
    recovered_b = CellObject("b", "uid-b", {"id": 2, "address": "b:8080"}, created="2", status_ranges=b_ranges)
    p2 = plan([cell("new", 3, created="0"), recovered_b])
    assert p2.records.record("b").sequence_ranges == b_ranges  # re-claimed, not re-allocated
    assert p2.records.record("new").sequence_ranges[0].minval > b_ranges[0].maxval
