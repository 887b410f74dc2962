"""Reconcile the Cells of one namespace: observe -> plan -> publish records -> report status.

The shell around :func:`cells_operator.topology.plan_topology`. The records ConfigMap is written
first, with optimistic concurrency (replace at the resourceVersion that was planned against; on a
conflict re-read and re-plan), and only then does any Cell say ``Ready`` -- so a status never
claims something that is not published, and two writers never both allocate the same range.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from cells_formats.records import (
    TOPOLOGY_JSON,
    RecordsError,
    Topology,
    content_hash,
    parse_topology_json,
    render_records,
)

from . import base_config
from . import conditions as cond
from .actions import Action, PostEvent, SetFinalizers, WriteStatus, execute, execute_each
from .cell import PLURAL as CELLS
from .cell import Problem
from .config import FINALIZER, OperatorConfig
from .kube import ConfigMapState, Kube
from .publish import PublishConflicts, publish_configmap
from .topology import CellObject, CellVerdict, Change, TopologyPlan, plan_topology

log = logging.getLogger(__name__)


@dataclass
class CellsResult:
    """What one reconcile did, for logs, metrics and the rules reconciler that runs after it."""

    records: Topology | None
    published: bool = False
    conflicts: int = 0
    bytes: int = 0
    verdicts: dict[str, CellVerdict] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    error: str | None = None
    # Why nothing was published: RECORDS_UNREADABLE (a person must fix the ConfigMap: Stalled) or
    # PUBLISH_FAILED (write conflicts that may clear on the next pass: Reconciling).
    error_reason: str | None = None
    # Why the planned records were held back although the pass went on (RECORDS_TOO_LARGE): ``records``
    # are then the published ones, which stay, and every verdict says why.
    held: str | None = None


RECORDS_UNREADABLE = "RecordsUnreadable"
PUBLISH_FAILED = "PublishFailed"
RECORDS_TOO_LARGE = "RecordsTooLarge"


def deletion_blockers(rules: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Cells that RoutingRules still send traffic to by name (``proxy.cellRef``)."""
    blockers: dict[str, list[str]] = {}
    for rule in rules:
        if rule["metadata"].get("deletionTimestamp"):
            continue
        ref = ((rule.get("spec") or {}).get("proxy") or {}).get("cellRef")
        if ref:
            blockers.setdefault(ref, []).append(f"RoutingRule {rule['metadata']['name']!r} proxies to it")
    return blockers


def records_annotations(records: Topology, rendered: dict[str, str]) -> dict[str, str]:
    """The records ConfigMap's annotations; one definition for the operator and ``cells-operator render``."""
    return {
        "cells.dev/revision": str(records.revision),
        "cells.dev/content-hash": content_hash(rendered[TOPOLOGY_JSON]),
    }


def desired_status(verdict: CellVerdict, generation: int, previous: dict | None) -> dict[str, Any]:
    record, problem = verdict.record, verdict.problem
    if problem is not None and verdict.deleting:
        conds = cond.reconciling(problem.reason, problem.message)
    elif problem is not None and record is not None:
        conds = cond.stalled(
            problem.reason,
            f"{problem.message}. The previously registered version stays published until this is fixed.",
        )
    elif problem is not None:
        conds = cond.stalled(problem.reason, f"{problem.message}. The cell is not registered.")
    else:
        assert record is not None
        # Offline stays in config.toml (ADR 0010): "not routable" is the control plane's notion only.
        routable = (
            "routable" if record.routable else "not routable (Offline: kept in config.toml, never a proxy target)"
        )
        conds = cond.ready(
            "Registered",
            f"cell {record.id} ({record.session_prefix}) is registered, {record.state.value} and {routable}",
        )
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": cond.merge_conditions((previous or {}).get("conditions"), conds, generation),
        "state": record.state.value if record else None,
        "sessionPrefix": record.session_prefix if record else None,
        "registeredId": record.id if record else None,
        "sequenceRanges": [r.model_dump() for r in record.sequence_ranges] if record else None,
    }
    return status


def cell_events(verdict: CellVerdict, previous: dict | None) -> list[cond.Event]:
    """Events on transitions only (ADR 0015): a Warning when the Cell's problem reason changes. What the
    records change (``Registered``, ranges, retirement) is posted from the publish's changes instead."""
    problem = verdict.problem
    if problem is not None and cond.ready_reason(previous) != problem.reason:
        return [cond.Event(problem.reason, problem.message, warning=True)]
    return []


def report(
    verdict: CellVerdict, generation: int, previous: dict | None
) -> tuple[dict[str, Any] | None, list[cond.Event]]:
    """What to write for a verdict: the status (None: it would change nothing) and the Events to post."""
    status = desired_status(verdict, generation, previous)
    if not cond.status_differs(previous, status):
        return None, []
    return status, cell_events(verdict, previous)


def finalizers_after(obj: dict[str, Any], verdict: CellVerdict) -> tuple[str, ...] | None:
    """The Cell's finalizer list after this verdict (None: unchanged). A Cell released by the planner
    loses ours; any other Cell not being deleted gets it, so its records outlive no reference to it."""
    finalizers = tuple((obj["metadata"].get("finalizers")) or ())
    if verdict.release:
        return tuple(f for f in finalizers if f != FINALIZER) if FINALIZER in finalizers else None
    if not verdict.deleting and FINALIZER not in finalizers:
        return (*finalizers, FINALIZER)
    return None


def plan_report(obj: dict[str, Any], verdict: CellVerdict) -> list[Action]:
    """What to write on one Cell after the records were published: finalizer, then status and Events.
    A released Cell only loses its finalizer (it is about to disappear)."""
    actions: list[Action] = []
    finalizers = finalizers_after(obj, verdict)
    if finalizers is not None:
        actions.append(SetFinalizers(CELLS, obj, finalizers))
    if verdict.release:
        return actions
    status, events = report(verdict, obj["metadata"].get("generation", 1), obj.get("status") or {})
    if status is not None:
        actions.append(WriteStatus(CELLS, obj, status))
    actions.extend(PostEvent(obj, event) for event in events)
    return actions


def plan_change_events(changes: list[Change], by_name: dict[str, dict[str, Any]]) -> list[Action]:
    """Events for what the records publish changed (``Registered``, ranges, retirement), on Cells that exist."""
    return [
        PostEvent(by_name[c.name], cond.Event(c.reason, c.message, c.warning)) for c in changes if c.name in by_name
    ]


def held_back(published: Topology, cells: list[CellObject], why: str) -> CellsResult:
    """The planned records are over the ConfigMap size limit: nothing is written, the published records
    stay, and every Cell is Stalled with the reason (its published record, if any, is what it reports)."""
    problem = Problem(RECORDS_TOO_LARGE, why)
    verdicts = {c.name: CellVerdict(c.name, published.record(c.name), problem, deleting=c.deleting) for c in cells}
    return CellsResult(published, verdicts=verdicts, error_reason=RECORDS_TOO_LARGE, held=problem.message)


def newly_held(cell_objs: list[dict[str, Any]], reason: str) -> bool:
    """Whether ``reason`` is news for some Cell (its Ready reason is another): then it is logged, once per
    transition rather than once per pass."""
    return any(cond.ready_reason(o.get("status")) != reason for o in cell_objs)


def needs_a_person(reason: str) -> bool:
    """Records unreadable or base config unusable: Stalled (a person must act), not Reconciling."""
    return reason == RECORDS_UNREADABLE or reason in base_config.REASONS


def plan_unpublished(obj: dict[str, Any], reason: str, error: str) -> list[Action]:
    """The records could not be written or read: say so on the Cell, claim nothing (the rest of its status,
    which describes what is still published, stays). A Warning only for a base config problem, once."""
    meta = obj["metadata"]
    previous = obj.get("status") or {}
    generation = meta.get("generation", 1)
    conds = cond.stalled(reason, error) if needs_a_person(reason) else cond.reconciling(reason, error)
    status = {
        **previous,
        "observedGeneration": generation,
        "conditions": cond.merge_conditions(previous.get("conditions"), conds, generation),
    }
    if not cond.status_differs(previous, status):
        return []
    actions: list[Action] = [WriteStatus(CELLS, obj, status, announce=False)]
    if reason in base_config.REASONS and cond.ready_reason(previous) != reason:
        actions.append(PostEvent(obj, cond.Event(reason, error, warning=True)))
    return actions


def namespace_terminating(exc: ApiException, cells: list[CellObject]) -> bool:
    """The records could not be created because the namespace is being deleted (the API server answers a
    create there with 403 "... because it is being terminated") and every Cell is being deleted with it."""
    return exc.status == 403 and "being terminated" in str(exc.body) and all(c.deleting for c in cells)


def released(cells: list[CellObject]) -> CellsResult:
    """Nothing left to publish or protect: every Cell's finalizer may go, so they do not hold the namespace."""
    return CellsResult(
        Topology(), verdicts={c.name: CellVerdict(c.name, None, deleting=True, release=True) for c in cells}
    )


class CellReconciler:
    def __init__(self, kube: Kube, config: OperatorConfig):
        self.kube = kube
        self.config = config

    def publish(
        self, namespace: str, cells: list[CellObject], blockers: dict[str, list[str]], base: str | None = None
    ) -> CellsResult:
        """Plan against the current records and write them; re-plan on every conflict."""

        def plan(
            current: ConfigMapState,
        ) -> tuple[dict[str, str], dict[str, str | None], tuple[Topology, TopologyPlan]]:
            text = current.data.get(TOPOLOGY_JSON)
            previous = parse_topology_json(text) if text else Topology()
            topology_plan = plan_topology(previous, cells, blockers)
            rendered = render_records(topology_plan.records, base)
            return rendered, dict(records_annotations(topology_plan.records, rendered)), (previous, topology_plan)

        try:
            out = publish_configmap(
                self.kube, namespace, self.config.topology_configmap, plan, self.config.conflict_retries
            )
        except RecordsError as exc:
            return CellsResult(None, error=str(exc), error_reason=RECORDS_UNREADABLE)
        except PublishConflicts as exc:
            return CellsResult(None, error=str(exc), error_reason=PUBLISH_FAILED)
        except ApiException as exc:
            if namespace_terminating(exc, cells):
                return released(cells)  # the namespace is going, and its records are already gone
            raise
        published, topology_plan = out.plan
        if out.too_large is not None:
            name = self.config.topology_configmap
            return held_back(published, cells, f"the records ConfigMap {name!r} cannot be published: {out.too_large}")
        changes = topology_plan.changes if out.written else []
        return CellsResult(
            topology_plan.records, out.written, out.conflicts, out.bytes, topology_plan.verdicts, changes
        )

    def reconcile(self, namespace: str, cell_objs: list[dict], rules: list[dict]) -> CellsResult:
        if not cell_objs:
            current = self.kube.read_configmap(namespace, self.config.topology_configmap)
            if current.resource_version is None:
                return CellsResult(Topology())  # nothing registered, nothing published: create nothing
        cells = [CellObject.from_api(o) for o in cell_objs]
        by_name = {o["metadata"]["name"]: o for o in cell_objs}
        base, problem = self._base_config(namespace)
        if problem is not None and not all(c.deleting for c in cells):
            # Nothing is published while the base is unusable: the last published config.toml stays.
            # (When every Cell is being deleted there is nothing left to protect: publish without it.)
            message = f"{problem.message}; nothing is published until it is fixed, the last published config.toml stays"
            self._execute([plan_unpublished(obj, problem.reason, message) for obj in cell_objs])
            return CellsResult(None, error=message, error_reason=problem.reason)
        result = self.publish(namespace, cells, deletion_blockers(rules), base)
        if result.held is not None and newly_held(cell_objs, RECORDS_TOO_LARGE):
            log.warning(
                "records of %s not published: %s; the last published records stay, every Cell is Stalled (%s)",
                namespace,
                result.held,
                RECORDS_TOO_LARGE,
                extra={"namespace": namespace},
            )
        if result.error is not None:
            reason = result.error_reason or PUBLISH_FAILED
            self._execute([plan_unpublished(obj, reason, result.error) for obj in cell_objs])
            return result
        execute(self.kube, plan_change_events(result.changes, by_name))
        self._execute([plan_report(by_name[name], verdict) for name, verdict in result.verdicts.items()])
        return result

    def _execute(self, plans: list[list[Action]]) -> None:
        execute_each(self.kube, plans, self.config.report_concurrency)

    def _base_config(self, namespace: str) -> tuple[str | None, Problem | None]:
        """The base config.toml named by ``--base-config-configmap`` (None: not configured), or its problem."""
        name = self.config.base_config_configmap
        if not name:
            return None, None
        current = self.kube.read_configmap(namespace, name)
        return base_config.check_base(name, current.data if current.resource_version is not None else None)
