"""Plan the Topology Service records of one namespace from its Cells and the records published before.

This is the pure heart of cell reconciliation. The published records are the *only* allocation
state: a restarted operator, a second replica or a concurrent reconcile all start from them, so
nothing that was allocated is ever allocated again. The planner therefore takes the previous records
and the current Cells and returns the next records plus a verdict per Cell; the shell writes the
records with optimistic concurrency and then reports the verdicts as status.

Rules the planner enforces:
- a registered cell keeps its record whenever its current spec is invalid (nothing published is
  disturbed), and the cell that registered first keeps an id / prefix / first-cell slot over a later
  claimant;
- ``id`` never changes once registered; allocated ranges never move or shrink (they may grow);
- ranges never overlap, including the retired ranges of deleted cells, which are never reused;
- deleting a cell retires its ranges, unless something still routes to it (then deletion waits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cells_formats.fields import SequenceRange
from cells_formats.records import CellRecord, RetiredRange, Topology

from .cell import CellSpec, Problem, check_cell_spec, parse_cell_spec
from .ranges import RangeExhausted, allocate, find_overlap, first_internal_overlap


@dataclass(frozen=True)
class CellObject:
    """What the planner needs of a Cell object from the API."""

    name: str
    uid: str
    spec: Mapping[str, Any]
    generation: int = 1
    deleting: bool = False
    created: str = ""  # creationTimestamp: the order in which new cells claim ids and prefixes
    # Ranges this cell's status says were published for it: if the records were lost (ConfigMap deleted
    # by hand), they are re-claimed instead of allocating new ones, so IDs in use are never handed out again.
    status_ranges: tuple[SequenceRange, ...] = ()

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> CellObject:
        """From a Cell as the API serves it."""
        meta = obj["metadata"]
        return cls(
            name=meta["name"],
            uid=meta.get("uid", ""),
            spec=obj.get("spec") or {},
            generation=meta.get("generation", 1),
            deleting=bool(meta.get("deletionTimestamp")),
            created=meta.get("creationTimestamp", ""),
            status_ranges=_status_ranges(obj),
        )


def _status_ranges(obj: Mapping[str, Any]) -> tuple[SequenceRange, ...]:
    """The ranges the Cell's status reports as published (only trusted for the same id)."""
    status = obj.get("status") or {}
    if status.get("registeredId") != (obj.get("spec") or {}).get("id"):
        return ()
    try:
        return tuple(
            SequenceRange(minval=int(r["minval"]), maxval=int(r["maxval"])) for r in status.get("sequenceRanges") or ()
        )
    except (KeyError, TypeError, ValueError):
        return ()


@dataclass(frozen=True)
class CellVerdict:
    """The outcome for one Cell.

    ``record`` is what is published for it (possibly an older, valid version when ``problem`` is set);
    ``problem`` says why its current spec is not live; ``release`` says its finalizer may go.
    """

    name: str
    record: CellRecord | None
    problem: Problem | None = None
    deleting: bool = False
    release: bool = False


@dataclass(frozen=True)
class Change:
    """A decision worth an Event on the Cell."""

    name: str
    reason: str
    message: str
    warning: bool = False


@dataclass
class TopologyPlan:
    records: Topology
    verdicts: dict[str, CellVerdict]
    changes: list[Change] = field(default_factory=list)


class _Claims:
    """Who holds which id, session prefix, ranges and the first-cell slot while planning."""

    def __init__(self, topology: Topology):
        self.ids = {c.id: c.name for c in topology.cells}
        self.prefixes = {c.session_prefix: c.name for c in topology.cells}
        self.first = next((c.name for c in topology.cells if c.first_cell), None)
        self.ranges: dict[str, list[SequenceRange]] = {c.name: list(c.sequence_ranges) for c in topology.cells}
        self.retired = [r.as_range() for r in topology.retired_ranges]

    def others_ranges(self, name: str) -> list[SequenceRange]:
        return [r for owner, rs in self.ranges.items() if owner != name for r in rs] + self.retired

    def every_range(self) -> list[SequenceRange]:
        return [r for rs in self.ranges.values() for r in rs] + self.retired

    def release(self, record: CellRecord) -> None:
        self.ids.pop(record.id, None)
        self.prefixes.pop(record.session_prefix, None)
        if self.first == record.name:
            self.first = None

    def take(self, record: CellRecord) -> None:
        self.ids[record.id] = record.name
        self.prefixes[record.session_prefix] = record.name
        if record.first_cell:
            self.first = record.name
        self.ranges[record.name] = list(record.sequence_ranges)

    def retire(self, record: CellRecord) -> None:
        self.release(record)
        self.ranges.pop(record.name, None)
        self.retired.extend(record.sequence_ranges)


def _conflict(spec: CellSpec, name: str, claims: _Claims, current: CellRecord | None) -> Problem | None:
    """Checks against the rest of the namespace, in the order a user would want them reported."""
    holder = claims.ids.get(spec.id)
    if holder is not None and holder != name:
        return Problem("DuplicateId", f"id {spec.id} is already registered by cell {holder!r}")
    prefix = spec.effective_session_prefix
    holder = claims.prefixes.get(prefix)
    if holder is not None and holder != name:
        return Problem("DuplicateSessionPrefix", f"sessionPrefix {prefix!r} is already used by cell {holder!r}")
    if spec.first_cell and claims.first not in (None, name):
        return Problem("DuplicateFirstCell", f"cell {claims.first!r} is already the first cell of this namespace")
    if spec.sequence_ranges:
        if pair := first_internal_overlap(list(spec.sequence_ranges)):
            return Problem("RangeOverlap", f"sequenceRanges {pair[0]} and {pair[1]} overlap each other")
        for r in spec.sequence_ranges:
            if current is not None and r in current.sequence_ranges:
                continue  # already ours
            if hit := find_overlap(r, claims.retired):
                return Problem("RangeOverlap", f"sequenceRanges {r} overlaps retired range {hit}")
            if hit := find_overlap(r, claims.others_ranges(name)):
                owner = next(o for o, rs in claims.ranges.items() if hit in rs)
                return Problem("RangeOverlap", f"sequenceRanges {r} overlaps range {hit} of cell {owner!r}")
    return None


def _immutable(spec: CellSpec, current: CellRecord) -> Problem | None:
    if spec.id != current.id:
        return Problem(
            "IdImmutable",
            f"id cannot change once registered (registered as {current.id}, spec says {spec.id}); "
            f"set it back to {current.id} or create a new Cell",
        )
    if spec.sequence_ranges is not None:
        missing = [r for r in current.sequence_ranges if r not in spec.sequence_ranges]
        if missing:
            listed = ", ".join(str(r) for r in missing)
            return Problem(
                "RangeImmutable",
                f"allocated ranges never change or shrink: sequenceRanges must keep {listed}",
            )
    return None


def _desired_record(obj: CellObject, spec: CellSpec, current: CellRecord | None, claims: _Claims) -> CellRecord:
    if current is None and obj.status_ranges and not spec.sequence_ranges:
        ranges = list(obj.status_ranges)
    elif spec.sequence_ranges:
        # Keep the allocated order first, then the user's additions.
        kept = list(current.sequence_ranges) if current else []
        ranges = kept + [r for r in spec.sequence_ranges if r not in kept]
    elif current is not None:
        ranges = list(current.sequence_ranges)
    else:
        ranges = [allocate(spec.sequence_size, claims.every_range())]
    return CellRecord(
        name=obj.name,
        uid=obj.uid,
        id=spec.id,
        address=spec.address,
        session_prefix=spec.effective_session_prefix,
        state=spec.state,
        first_cell=spec.first_cell,
        ring=spec.ring,
        sequence_ranges=tuple(ranges),
        skip_range_validation=spec.skip_range_validation,
    )


def _order(cells: Sequence[CellObject], previous: Topology) -> list[CellObject]:
    """Registered cells in registration order, then new ones by creation time and name.

    New cells with explicit ranges go before new cells that need an allocation, so that an
    allocation never takes a range somebody asked for explicitly in the same batch (for example a
    legacy cell holding 1 ... 10^12-1, applied together with the new cells)."""
    position = {c.name: i for i, c in enumerate(previous.cells)}
    registered = sorted((c for c in cells if c.name in position), key=lambda c: position[c.name])
    new = sorted(
        (c for c in cells if c.name not in position),
        key=lambda c: (not ((c.spec or {}).get("sequenceRanges") or c.status_ranges), c.created, c.name),
    )
    return registered + new


@dataclass
class _Draft:
    """The records being planned in one round, and the claims they hold.

    Every change goes through :meth:`retire` or :meth:`register`, so the records, the retired ranges
    and the claims that the conflict checks read can never disagree half-way through a round.
    """

    claims: _Claims
    records: dict[str, CellRecord]
    retired: list[RetiredRange]
    verdicts: dict[str, CellVerdict] = field(default_factory=dict)

    @classmethod
    def start(cls, previous: Topology) -> _Draft:
        return cls(_Claims(previous), {c.name: c for c in previous.cells}, list(previous.retired_ranges))

    def retire(self, name: str) -> None:
        """Remove a record and retire its ranges: they are never handed out again."""
        record = self.records.pop(name)
        self.retired += _retire(record)
        self.claims.retire(record)

    def register(self, desired: CellRecord, current: CellRecord | None) -> None:
        """Publish ``desired``, letting go of what ``current`` (its older version) held."""
        if current is not None:
            self.claims.release(current)
        self.claims.take(desired)
        self.records[desired.name] = desired
        self.verdicts[desired.name] = CellVerdict(desired.name, desired)

    def topology(self, previous: Topology) -> Topology:
        """The records in registration order (registered cells keep their place, new ones follow)."""
        order = [c.name for c in previous.cells if c.name in self.records]
        order += [n for n in self.records if n not in order]
        return Topology(
            revision=previous.revision,
            cells=tuple(self.records[n] for n in order),
            retired_ranges=tuple(self.retired),
        )


def _plan_once(previous: Topology, cells: Sequence[CellObject], blockers: Mapping[str, Sequence[str]]) -> TopologyPlan:
    """One round of planning: forget the records of vanished Cells, then judge every Cell in order."""
    draft = _Draft.start(previous)
    _retire_vanished(draft, {c.name for c in cells})
    for obj in _order(cells, previous):
        current = _current_record(draft, obj)
        if obj.deleting:
            _plan_deletion(draft, obj, current, blockers.get(obj.name, ()))
        else:
            _plan_cell(draft, obj, current)
    return TopologyPlan(draft.topology(previous), draft.verdicts)


def _retire_vanished(draft: _Draft, present: set[str]) -> None:
    """Records whose Cell is gone without passing through its finalizer (finalizer removed by hand):
    their ranges are retired, so that they are never reused."""
    for name in [n for n in draft.records if n not in present]:
        draft.retire(name)


def _current_record(draft: _Draft, obj: CellObject) -> CellRecord | None:
    """The record published for this Cell, if it is this object's. A record under the same name but
    another uid belonged to an object deleted without its finalizer: it is retired, and the new object
    starts unregistered (its old id and ranges are not inherited)."""
    current = draft.records.get(obj.name)
    if current is not None and current.uid != obj.uid and obj.uid:
        draft.retire(obj.name)
        return None
    return current


def _plan_deletion(draft: _Draft, obj: CellObject, current: CellRecord | None, blockers: Sequence[str]) -> None:
    """A Cell being deleted keeps its record (and its finalizer) while something still routes to it or
    it is the first cell; otherwise its ranges are retired and its finalizer may go."""
    why = list(blockers)
    if current is not None and current.first_cell:
        why.insert(0, "it is the first cell (set firstCell on another cell first)")
    if current is not None and why:
        problem = Problem("DeletionBlocked", "deletion waits: " + "; ".join(why))
        draft.verdicts[obj.name] = CellVerdict(obj.name, current, problem, deleting=True)
        return
    if current is not None:
        draft.retire(obj.name)
    draft.verdicts[obj.name] = CellVerdict(obj.name, None, deleting=True, release=True)


def _plan_cell(draft: _Draft, obj: CellObject, current: CellRecord | None) -> None:
    """Register or update a live Cell; on any problem it keeps the record it had (maybe none), so a bad
    edit never disturbs what is published."""
    desired, problem = _desired_or_problem(obj, current, draft.claims)
    if desired is None:
        draft.verdicts[obj.name] = CellVerdict(obj.name, current, problem)
        return
    draft.register(desired, current)


def _desired_or_problem(
    obj: CellObject, current: CellRecord | None, claims: _Claims
) -> tuple[CellRecord, None] | tuple[None, Problem]:
    """The record this Cell asks for, or the first reason it cannot have it: parse, then the checks in
    the order a user would want them reported (immutability, the cell alone, the rest of the namespace),
    then the allocation itself, which can only fail when the 57-bit sequence is full."""
    spec, problem = parse_cell_spec(dict(obj.spec))
    if spec is None:
        assert problem is not None
        return None, problem
    problem = (
        (_immutable(spec, current) if current else None)
        or check_cell_spec(spec)
        or _conflict(spec, obj.name, claims, current)
        or _recovery_conflict(obj, spec, current, claims)
    )
    if problem is not None:
        return None, problem
    try:
        return _desired_record(obj, spec, current, claims), None
    except RangeExhausted as exc:
        return None, Problem("RangeExhausted", str(exc))


def _recovery_conflict(obj: CellObject, spec: CellSpec, current: CellRecord | None, claims: _Claims) -> Problem | None:
    """A Cell the records lost (ConfigMap deleted by hand) re-claims the ranges its status reports; they
    must still be free, exactly as if the user had written them in spec.sequenceRanges."""
    if current is not None or not obj.status_ranges or spec.sequence_ranges:
        return None
    recovered = spec.model_copy(update={"sequence_ranges": obj.status_ranges})
    return _conflict(recovered, obj.name, claims, None)


def _retire(record: CellRecord) -> list[RetiredRange]:
    return [
        RetiredRange(minval=r.minval, maxval=r.maxval, cell_id=record.id, cell_name=record.name)
        for r in record.sequence_ranges
    ]


def plan_topology(
    previous: Topology,
    cells: Sequence[CellObject],
    blockers: Mapping[str, Sequence[str]] | None = None,
) -> TopologyPlan:
    """The next records and a verdict per cell.

    Planning repeats until the records stop changing (at most a few rounds), so that a slot released
    by one cell (an old prefix, the first-cell flag) can be taken by another in the same reconcile,
    whatever their order.
    """
    blockers = blockers or {}
    current = previous
    plan = _plan_once(current, cells, blockers)
    for _ in range(3):
        if plan.records.same_content(current):
            break
        current = plan.records
        plan = _plan_once(current, cells, blockers)
    records = plan.records
    if not records.same_content(previous):
        records = records.model_copy(update={"revision": previous.revision + 1})
    return TopologyPlan(records, plan.verdicts, _changes(previous, records))


def _changes(before: Topology, after: Topology) -> list[Change]:
    changes: list[Change] = []
    for rec in after.cells:
        old = before.record(rec.name)
        if old is None:
            ranges = ", ".join(str(r) for r in rec.sequence_ranges)
            changes.append(
                Change(
                    rec.name,
                    "Registered",
                    f"registered cell {rec.id} ({rec.session_prefix}) with sequence ranges {ranges}",
                )
            )
            continue
        new_ranges = [r for r in rec.sequence_ranges if r not in old.sequence_ranges]
        if new_ranges:
            changes.append(
                Change(rec.name, "RangeAdded", "added sequence ranges " + ", ".join(str(r) for r in new_ranges))
            )
        if rec.model_copy(update={"sequence_ranges": ()}) != old.model_copy(update={"sequence_ranges": ()}):
            fields = [
                f
                for f in ("address", "session_prefix", "state", "first_cell", "ring", "skip_range_validation")
                if getattr(rec, f) != getattr(old, f)
            ]
            changes.append(
                Change(
                    rec.name,
                    "Updated",
                    "updated " + ", ".join(f"{f}: {getattr(old, f)!s} -> {getattr(rec, f)!s}" for f in fields),
                )
            )
    for old in before.cells:
        if after.record(old.name) is None:
            ranges = ", ".join(str(r) for r in old.sequence_ranges)
            changes.append(
                Change(old.name, "Deregistered", f"removed cell {old.id} from the records; ranges {ranges} retired")
            )
    return changes
