"""Reconcile the RoutingRules of one namespace: compile -> publish the router ConfigMap -> report status.

Runs after the cells reconcile of the same pass, against the records it just published, so a Cell's new
address re-renders every proxy rule naming it in the same pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from cells_formats.records import Topology

from . import conditions as cond
from .actions import Action, PostEvent, WriteStatus, execute_each
from .config import OperatorConfig
from .kube import ConfigMapState, Kube
from .publish import publish_configmap
from .rule import PLURAL as RULES
from .rulesets import (
    MAX_CONFIGMAP_BYTES,
    PublishedRules,
    RuleObject,
    RulesError,
    RulesPlan,
    RuleVerdict,
    parse_published,
    plan_rulesets,
)

log = logging.getLogger(__name__)

RULESET_COMPLETE = "RulesetComplete"
PUBLISHED = "Published"
RULESET_TOO_LARGE = "RulesetTooLarge"  # rulesets.choose_one's reason
HASH_ANNOTATION_PREFIX = "rules.cells.dev/"


@dataclass
class RulesResult:
    plan: RulesPlan
    written: bool = False
    conflicts: int = 0
    bytes: int = 0
    stale_hash_keys: list[str] = field(default_factory=list)
    # statuses held back in a pass during a burst (:func:`deferred`)
    deferred: int = 0


def rule_object(obj: dict[str, Any]) -> RuleObject:
    meta = obj["metadata"]
    return RuleObject(meta["name"], meta.get("uid", meta["name"]), obj.get("spec") or {}, meta.get("generation", 1))


def ruleset_annotations(plan: RulesPlan, current: dict[str, str]) -> dict[str, str | None]:
    """A content-hash annotation per ruleset; None removes the hash of a ruleset that no longer exists.

    One definition for the operator and ``cells-operator render``."""
    annotations: dict[str, str | None] = {HASH_ANNOTATION_PREFIX + rs: h for rs, h in plan.hashes.items()}
    for key in current:
        if key.startswith(HASH_ANNOTATION_PREFIX) and key not in annotations:
            annotations[key] = None
    return annotations


def desired_status(verdict: RuleVerdict, generation: int, previous: dict | None) -> dict[str, Any]:
    """The status a verdict needs (ADR 0015: what a rule's status carries and when it is rewritten).

    ``contentHash`` is the hash of a ruleset version that holds this rule exactly as the rest of the
    status describes it. Other rules entering the ruleset change its hash, but not this rule's outcome:
    a changed hash alone keeps the previous one, so it never rewrites the status. The current hash of a
    ruleset is the router ConfigMap's ``rules.cells.dev/<ruleset>`` annotation."""
    live, problem = verdict.live, verdict.problem
    where = f"position {verdict.position} of ruleset {live.ruleset!r}" if live else ""
    if problem is not None and live is not None:
        conds = cond.stalled(
            problem.reason,
            f"{problem.message}. Generation {live.generation} stays published at {where} until this is fixed.",
        )
    elif problem is not None:
        conds = cond.stalled(problem.reason, f"{problem.message}. The rule is not published.")
    else:
        assert live is not None
        conds = cond.ready(PUBLISHED, f"published at {where}")
    if live is not None:
        if verdict.catch_all:
            conds.append(
                cond.Condition(
                    RULESET_COMPLETE, True, "HasCatchAll", f"ruleset {live.ruleset!r} ends with a catch-all rule"
                )
            )
        else:
            conds.append(
                cond.Condition(
                    RULESET_COMPLETE,
                    False,
                    "NoCatchAll",
                    f"ruleset {live.ruleset!r} has no final rule without a match: a request matching no rule "
                    "gets an error at the edge",
                )
            )
    status = {
        "observedGeneration": generation,
        "conditions": cond.merge_conditions((previous or {}).get("conditions"), conds, generation),
        "liveGeneration": live.generation if live else None,
        "position": verdict.position,
        "contentHash": verdict.content_hash,
    }
    old_hash = (previous or {}).get("contentHash")
    if (
        previous is not None  # (old_hash is set only if it is)
        and old_hash is not None
        and status["contentHash"] is not None
        and all(previous.get(k) == v for k, v in status.items() if k != "contentHash")
    ):
        status["contentHash"] = old_hash
    return status


def rule_events(verdict: RuleVerdict, previous: dict | None) -> list[cond.Event]:
    """The Events a verdict is worth given the previous status: transitions only (ADR 0015).

    - a problem whose reason differs from the previous Ready reason: Warning (also for a new rule);
    - a newer generation published over an older one, or a rule published again after a problem: Normal
      ``Published`` (the first publish of a new rule is not an Event: its Ready condition says it);
    - a ruleset that loses its final catch-all: Warning ``NoCatchAll`` on its last rule."""
    previous = previous or {}
    old_reason = cond.ready_reason(previous)
    old_live = previous.get("liveGeneration")
    live, problem = verdict.live, verdict.problem
    events: list[cond.Event] = []
    if problem is not None:
        if old_reason != problem.reason:
            events.append(cond.Event(problem.reason, problem.message, warning=True))
    elif live is not None:
        where = f"at position {verdict.position} of ruleset {live.ruleset!r}"
        if old_live is not None and old_live != live.generation:
            events.append(
                cond.Event(
                    PUBLISHED, f"generation {live.generation} published {where}, replacing generation {old_live}"
                )
            )
        elif old_reason is not None and old_reason != PUBLISHED:
            events.append(
                cond.Event(PUBLISHED, f"generation {live.generation} published {where} again (was {old_reason})")
            )
    old_complete = cond.condition(previous, RULESET_COMPLETE) or {}
    if live is not None and not verdict.catch_all and verdict.last_in_ruleset and old_complete.get("status") != "False":
        events.append(
            cond.Event(
                "NoCatchAll",
                f"ruleset {live.ruleset!r} has no final catch-all rule "
                "(this is its last rule): requests matching no rule get an error at the edge",
                warning=True,
            )
        )
    return events


def report(
    verdict: RuleVerdict, generation: int, previous: dict | None
) -> tuple[dict[str, Any] | None, list[cond.Event]]:
    """What to write for a verdict: the status (None: it would change nothing) and the Events to post."""
    status = desired_status(verdict, generation, previous)
    if not cond.status_differs(previous, status):
        return None, []
    return status, rule_events(verdict, previous)


def deferred(obj: dict[str, Any], verdict: RuleVerdict) -> bool:
    """Whether a pass in the middle of a burst holds back this rule's status (ADR 0015): the *first*
    status of a new rule, published in a ruleset that has no final catch-all yet.

    Its ``RulesetComplete=False`` would be true now and false as soon as the burst brings the catch-all
    -- which an apply sorted by name or priority brings last -- so writing it costs a second write for
    every rule of the ruleset. Held back, it is written once, by the pass after the burst (or when the
    burst outlasts ``incomplete_defer_seconds``). Only a rule without any status is held: a rule that
    reports something keeps having its changes written at once (a lost catch-all, a new generation), and a
    rule with a problem is never held."""
    previous = obj.get("status") or {}
    return (
        verdict.live is not None
        and verdict.problem is None
        and not verdict.catch_all
        and previous.get("observedGeneration") is None
        and not previous.get("conditions")
    )


def plan_report(obj: dict[str, Any], verdict: RuleVerdict, in_burst: bool = False) -> list[Action]:
    """What to write on one RoutingRule after the router ConfigMap was published: its status when it
    changed, and the Events of its transitions; nothing for a status :func:`deferred` in a burst
    (``in_burst``). RoutingRules carry no finalizer: the published router ConfigMap is rebuilt from the
    rules that exist, so a deleted rule needs no clean-up of its own."""
    assert verdict.live is None or verdict.ruleset is not None
    if in_burst and deferred(obj, verdict):
        return []
    status, events = report(verdict, obj["metadata"].get("generation", 1), obj.get("status") or {})
    if status is None:
        return []
    return [WriteStatus(RULES, obj, status), *(PostEvent(obj, event) for event in events)]


def newly_too_large(rule_objs: list[dict[str, Any]], plan: RulesPlan) -> list[str]:
    """The rules held back by the size limit in this plan whose status did not say so yet: logged once
    per transition, not once per pass."""
    return sorted(
        obj["metadata"]["name"]
        for obj in rule_objs
        if (v := plan.verdicts.get(obj["metadata"]["name"])) is not None
        and v.problem is not None
        and v.problem.reason == RULESET_TOO_LARGE
        and cond.ready_reason(obj.get("status")) != RULESET_TOO_LARGE
    )


class RouterConfigTooLarge(RuntimeError):
    """The router ConfigMap would be refused by the API server even after the rulesets' own size limit
    (others' annotations on it leave too little room): nothing is written, the pass fails, and retries."""


def live_rules(rule_objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules to publish: those not being deleted."""
    return [o for o in rule_objs if not o["metadata"].get("deletionTimestamp")]


class RuleReconciler:
    def __init__(self, kube: Kube, config: OperatorConfig):
        self.kube = kube
        self.config = config

    def publish(self, namespace: str, rules: list[RuleObject], topology: Topology) -> RulesResult:
        def plan(current: ConfigMapState) -> tuple[dict[str, str], dict[str, str | None], RulesPlan]:
            try:
                previous = parse_published(current.data)
            except RulesError as exc:
                # Hand-edited into something unreadable: restore the desired content from the rules.
                # Only the last valid versions of currently invalid rules are lost; the router keeps
                # serving its last good file meanwhile.
                log.warning(
                    "%s/%s: %s; rebuilding it from the RoutingRules", namespace, self.config.router_configmap, exc
                )
                previous = PublishedRules()
            rules_plan = plan_rulesets(rules, topology, previous, dialect=self.config.router_dialect)
            return rules_plan.data, ruleset_annotations(rules_plan, current.annotations), rules_plan

        name = self.config.router_configmap
        out = publish_configmap(self.kube, namespace, name, plan, self.config.conflict_retries)
        if out.too_large is not None:
            raise RouterConfigTooLarge(f"router ConfigMap {namespace}/{name} not published: {out.too_large}")
        return RulesResult(out.plan, out.written, out.conflicts, out.bytes)

    def reconcile(
        self, namespace: str, rule_objs: list[dict], topology: Topology, in_burst: bool = False
    ) -> RulesResult:
        """Publish, then report; ``in_burst``: this pass runs while a burst of events still arrives, and
        holds back the statuses :func:`deferred` says the rest of the burst would change."""
        live_objs = live_rules(rule_objs)
        if not live_objs and self.kube.read_configmap(namespace, self.config.router_configmap).resource_version is None:
            return RulesResult(RulesPlan({}, {}, {}))  # no rules and nothing published: create nothing
        result = self.publish(namespace, [rule_object(o) for o in live_objs], topology)
        if held := newly_too_large(live_objs, result.plan):
            log.warning(
                "%s/%s: rulesets %s would exceed the ConfigMap limit of %d bytes; their last valid versions stay "
                "published, and %d rule(s) are Stalled (%s): %s",
                namespace,
                self.config.router_configmap,
                ", ".join(result.plan.too_large),
                MAX_CONFIGMAP_BYTES,
                len(held),
                RULESET_TOO_LARGE,
                ", ".join(held[:10]) + (", ..." if len(held) > 10 else ""),
                extra={"namespace": namespace},
            )
        plans = [plan_report(obj, result.plan.verdicts[obj["metadata"]["name"]], in_burst) for obj in live_objs]
        if in_burst:
            result.deferred = sum(
                1 for obj in live_objs if deferred(obj, result.plan.verdicts[obj["metadata"]["name"]])
            )
        execute_each(self.kube, plans, self.config.report_concurrency)
        return result
