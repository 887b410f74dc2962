"""Reconcile the RoutingRules of one namespace: compile -> publish the router ConfigMap -> report status.

Runs after the cells reconcile of the same pass, against the records it just published, so a Cell's new
address re-renders every proxy rule naming it in the same pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from . import conditions as cond
from .config import OperatorConfig
from .kube import ConfigMapState, Kube, for_each
from .publish import publish_configmap
from .rule import PLURAL as RULES
from .rulesets import PublishedRules, RuleObject, RulesError, RulesPlan, RuleVerdict, parse_published, plan_rulesets
from .topology import Topology

log = logging.getLogger(__name__)

RULESET_COMPLETE = "RulesetComplete"
HASH_ANNOTATION_PREFIX = "rules.cells.dev/"


@dataclass
class RulesResult:
    plan: RulesPlan
    written: bool = False
    conflicts: int = 0
    bytes: int = 0
    stale_hash_keys: list[str] = field(default_factory=list)


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
        conds = cond.ready("Published", f"published at {where}")
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
    return {
        "observedGeneration": generation,
        "conditions": cond.merge_conditions((previous or {}).get("conditions"), conds, generation),
        "liveGeneration": live.generation if live else None,
        "position": verdict.position,
        "contentHash": verdict.content_hash,
    }


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
            rules_plan = plan_rulesets(rules, topology, previous)
            return rules_plan.data, ruleset_annotations(rules_plan, current.annotations), rules_plan

        out = publish_configmap(self.kube, namespace, self.config.router_configmap, plan, self.config.conflict_retries)
        return RulesResult(out.plan, out.written, out.conflicts, out.bytes)

    def reconcile(self, namespace: str, rule_objs: list[dict], topology: Topology) -> RulesResult:
        live_objs = [o for o in rule_objs if not o["metadata"].get("deletionTimestamp")]
        if not live_objs and self.kube.read_configmap(namespace, self.config.router_configmap).resource_version is None:
            return RulesResult(RulesPlan({}, {}, {}))  # no rules and nothing published: create nothing
        result = self.publish(namespace, [rule_object(o) for o in live_objs], topology)
        for_each(
            live_objs,
            lambda obj: self._report(obj, result.plan.verdicts[obj["metadata"]["name"]]),
            self.config.report_concurrency,
        )
        return result

    def _report(self, obj: dict[str, Any], verdict: RuleVerdict) -> None:
        meta = obj["metadata"]
        previous = obj.get("status") or {}
        status = desired_status(verdict, meta.get("generation", 1), previous)
        if not cond.status_differs(previous, status):
            return
        self.kube.write_status(RULES, obj, status)
        assert verdict.live is None or verdict.ruleset is not None
        old_ready = cond.condition(previous, cond.READY) or {}
        old_live = previous.get("liveGeneration")
        if verdict.problem is not None and old_ready.get("reason") != verdict.problem.reason:
            self.kube.post_event(obj, verdict.problem.reason, verdict.problem.message, warning=True)
        elif verdict.problem is None and verdict.live is not None and old_live != verdict.live.generation:
            self.kube.post_event(
                obj,
                "Published",
                f"generation {verdict.live.generation} published at position "
                f"{verdict.position} of ruleset {verdict.live.ruleset!r}",
            )
        old_complete = cond.condition(previous, RULESET_COMPLETE) or {}
        flag_now = verdict.live is not None and not verdict.catch_all and verdict.last_in_ruleset
        if flag_now and old_complete.get("status") != "False":
            assert verdict.live is not None
            self.kube.post_event(
                obj,
                "NoCatchAll",
                f"ruleset {verdict.live.ruleset!r} has no final catch-all rule "
                "(this is its last rule): requests matching no rule get an error at the edge",
                warning=True,
            )
