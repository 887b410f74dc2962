"""Compile the RoutingRules of one namespace into the router ConfigMap (pure).

Output: one key ``<ruleset>.json`` per ruleset -- a JSON array in the router's rules format, in
evaluation order (priority, then name) -- plus ``cells-operator.index.json``, which records which rule
(name, uid, generation, priority) each array element came from. The index is written atomically with the
rulesets, which is what makes the **last-valid-version policy** possible without any other state: a rule
edited into an invalid state keeps its previously published element (found through the index) until it
is fixed, so the published router config is never broken.

A ConfigMap holds about 1 MiB. A change that would exceed it is not truncated or half-written: every
ruleset the change touched keeps its previous content, and the rules involved say why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .cell import Problem
from .records import content_hash
from .rule import parse_rule_spec, render_rule
from .topology import Topology

INDEX_KEY = "cells-operator.index.json"
RULESET_SUFFIX = ".json"
# The API server refuses ConfigMaps over 1 MiB (data plus metadata); keep headroom for metadata.
MAX_CONFIGMAP_BYTES = 1_000_000


class RulesError(ValueError):
    """The published router ConfigMap cannot be read back; the operator will not overwrite it blindly."""


@dataclass(frozen=True)
class RuleObject:
    name: str
    uid: str
    spec: Mapping
    generation: int = 1


@dataclass(frozen=True)
class LiveRule:
    """A published element and the rule version it came from."""

    name: str
    uid: str
    generation: int
    priority: int
    ruleset: str
    element: dict[str, Any]

    def index_entry(self) -> dict[str, Any]:
        return {"name": self.name, "uid": self.uid, "generation": self.generation, "priority": self.priority}


@dataclass
class PublishedRules:
    """What the router ConfigMap holds now: live rules by uid, and each ruleset's rendered text."""

    live: dict[str, LiveRule] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleVerdict:
    name: str
    ruleset: str | None
    live: LiveRule | None
    problem: Problem | None = None
    position: int | None = None
    content_hash: str | None = None
    catch_all: bool = True  # whether the ruleset it is published in ends with a catch-all rule
    last_in_ruleset: bool = False


@dataclass
class RulesPlan:
    data: dict[str, str]
    hashes: dict[str, str]
    verdicts: dict[str, RuleVerdict]
    too_large: list[str] = field(default_factory=list)
    size: int = 0


def parse_published(data: Mapping[str, str]) -> PublishedRules:
    """Read the ConfigMap back into live rules. An absent index means nothing is live yet."""
    if INDEX_KEY not in data:
        return PublishedRules()
    try:
        index = json.loads(data[INDEX_KEY])
        live: dict[str, LiveRule] = {}
        texts: dict[str, str] = {}
        for ruleset, entries in index.items():
            text = data[ruleset + RULESET_SUFFIX]
            elements = json.loads(text)
            if len(elements) != len(entries):
                raise ValueError(f"ruleset {ruleset}: {len(elements)} rules but {len(entries)} index entries")
            texts[ruleset] = text
            for entry, element in zip(entries, elements, strict=True):
                live[entry["uid"]] = LiveRule(
                    entry["name"], entry["uid"], int(entry["generation"]), int(entry["priority"]), ruleset, element
                )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RulesError(f"router ConfigMap is not valid cells-operator output: {exc}") from exc
    return PublishedRules(live, texts)


def render_ruleset(elements: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(elements), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _render(live: Sequence[LiveRule]) -> tuple[dict[str, str], dict[str, list[LiveRule]]]:
    by_set: dict[str, list[LiveRule]] = {}
    for rule in live:
        by_set.setdefault(rule.ruleset, []).append(rule)
    data: dict[str, str] = {}
    index: dict[str, list[dict[str, Any]]] = {}
    for ruleset in sorted(by_set):
        ordered = sorted(by_set[ruleset], key=lambda r: (r.priority, r.name))
        by_set[ruleset] = ordered
        data[ruleset + RULESET_SUFFIX] = render_ruleset([r.element for r in ordered])
        index[ruleset] = [r.index_entry() for r in ordered]
    data[INDEX_KEY] = json.dumps(index, indent=1, sort_keys=True) + "\n"
    return data, by_set


def _size(data: Mapping[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in data.items())


def plan_rulesets(
    rules: Sequence[RuleObject],
    topology: Topology,
    previous: PublishedRules,
    limit: int = MAX_CONFIGMAP_BYTES,
) -> RulesPlan:
    desired: dict[str, tuple[LiveRule | None, Problem | None, str | None]] = {}
    for obj in rules:
        spec, problem = parse_rule_spec(dict(obj.spec))
        element = None
        if spec is not None:
            element, problem = render_rule(spec, topology)
        if element is not None and spec is not None:
            desired[obj.uid] = (
                LiveRule(obj.name, obj.uid, obj.generation, spec.priority, spec.ruleset, element),
                None,
                spec.ruleset,
            )
        else:
            desired[obj.uid] = (None, problem, spec.ruleset if spec else None)

    def choose(frozen: set[str]) -> dict[str, tuple[LiveRule | None, Problem | None]]:
        chosen: dict[str, tuple[LiveRule | None, Problem | None]] = {}
        for obj in rules:
            new, problem, _ = desired[obj.uid]
            old = previous.live.get(obj.uid)
            touches_frozen = (new is not None and new.ruleset in frozen) or (old is not None and old.ruleset in frozen)
            if touches_frozen and new != old:
                too_large = Problem(
                    "RulesetTooLarge",
                    f"publishing this change would exceed the ConfigMap limit of {limit} bytes",
                )
                chosen[obj.uid] = (old, problem or too_large)
            elif new is not None:
                chosen[obj.uid] = (new, None)
            else:
                chosen[obj.uid] = (old, problem)  # last valid version, if there is one
        return chosen

    chosen = choose(set())
    data, by_set = _render([live for live, _ in chosen.values() if live is not None])
    too_large: list[str] = []
    if _size(data) > limit:
        # Keep every ruleset this change touches exactly as it was published.
        changed = {
            rs for rs in set(by_set) | set(previous.texts) if data.get(rs + RULESET_SUFFIX) != previous.texts.get(rs)
        }
        too_large = sorted(changed)
        chosen = choose(changed)
        data, by_set = _render([live for live, _ in chosen.values() if live is not None])

    hashes = {rs: content_hash(data[rs + RULESET_SUFFIX]) for rs in by_set}
    verdicts: dict[str, RuleVerdict] = {}
    for obj in rules:
        live, problem = chosen[obj.uid]
        position = catch_all = None
        last = False
        if live is not None:
            ordered = by_set[live.ruleset]
            position = next(i for i, r in enumerate(ordered) if r.uid == obj.uid)
            catch_all = "match" not in ordered[-1].element
            last = position == len(ordered) - 1
        verdicts[obj.name] = RuleVerdict(
            name=obj.name,
            ruleset=live.ruleset if live else desired[obj.uid][2],
            live=live,
            problem=problem,
            position=position,
            content_hash=hashes.get(live.ruleset) if live else None,
            catch_all=True if catch_all is None else catch_all,
            last_in_ruleset=last,
        )
    return RulesPlan(data, hashes, verdicts, too_large, _size(data))
