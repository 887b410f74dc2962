"""The router's transform -> validate -> classify phases over a matched rule's captured groups (pure).

GitLab's HTTP router evaluates a rule as match -> transform -> validate -> classify [G6]
(``/work/shared/upstream/routable-tokens.md`` section 2.2, ADR 0014)::

    {"id": "...", "match": {"type": "header", "name": "private-token", "regexValue": "...(?<payload>...)..."},
     "transform": {"type": "routable-token-payload", "input": ["${payload}", "${payload_length}"],
                   "output": "decoded"},
     "validate": {"exist": ["${decoded.c}"]},
     "action": "classify", "classify": {"type": "CELL_ID", "value": "${decoded.c}"}}

This module is everything after the match: :func:`parse_phases` reads a rule's ``transform``,
``validate`` and ``classify.value`` once (when a ruleset loads, and for the operator's admission and
planner) and refuses with a precise :class:`SpecProblem` what cannot work at runtime; :meth:`Phases.apply`
runs them for one request's captured groups and answers :class:`Applied` (the classify value) or
:class:`NotApplied` (which phase, why). The decisions behind it are ADR 0014:

- **Values are decimal** (decision 1): decoded routing keys are integers, interpolated as decimal
  strings, so ``CELL_ID`` carries the cell id the Topology Service's ``config.toml`` knows (cell 10 is
  ``10``, not the token's ``a``).
- **Chains** (decision 2): ``transform`` is one step object (the current doc's shape [G6]) or an array
  of steps run in order (the handbook's array form [H1]); a step's ``input`` may name an earlier step's
  output (``${basic.payload}``); a single step is published as an object, several as an array.
- **A rule that does not resolve does not apply** (decision 3): a transform that cannot decode, a
  ``validate.exist`` that does not resolve to a non-empty value, or a classify value that does not
  resolve make the router continue with the next rule, so a request ends on the ruleset's catch-all
  (the legacy or first cell) as upstream's "cannot decide" does [G6]; never a 400 from the router.

Templates are ``${group}`` (a named group of the match) and ``${output.key}`` (a key of a step's
output), mixed with literal text; a lone ``$`` is not allowed (as in ``classify.value``, rule.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from cells_formats.ecmaregex import PatternError, UnsupportedPattern, compile_pattern

from .routable_token import (
    ROUTING_KEYS,
    Failure,
    decode_base64_text,
    decode_routable_json,
    decode_routable_payload,
)

TEMPLATE = re.compile(r"\$\{([^}]*)\}")
_REFERENCE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?")
OUTPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_STEPS = 4  # the longest known chain is two steps [M1]; a bound keeps per-request work small
STEP_FIELDS = frozenset({"type", "input", "output", "regexValue"})


class TransformType(StrEnum):
    ROUTABLE_TOKEN_PAYLOAD = "routable-token-payload"  # [G6] [M2]
    ROUTABLE_JSON = "routable-json"  # [M1] [M2]
    DECODE_BASE64_MATCH = "decode-base64-match"  # [M1] [M2]


# How many inputs each type takes: the token payload and, optionally, its length field [G6]; one value else.
INPUT_COUNTS: dict[TransformType, tuple[int, int]] = {
    TransformType.ROUTABLE_TOKEN_PAYLOAD: (1, 2),
    TransformType.ROUTABLE_JSON: (1, 1),
    TransformType.DECODE_BASE64_MATCH: (1, 1),
}


class MatchLike(Protocol):
    @property
    def named(self) -> Mapping[str, str | None]: ...


class PatternLike(Protocol):
    """What a step needs of a compiled pattern (``cells_formats.ecmaregex.EcmaPattern`` is one)."""

    @property
    def group_names(self) -> tuple[str, ...]: ...

    def search(self, text: str) -> MatchLike | None: ...


Compiler = Callable[[str], PatternLike]


@dataclass(frozen=True)
class SpecProblem:
    """Why a rule's phases cannot be used: a CamelCase reason (the operator's condition reason) and a message."""

    reason: str
    message: str


@dataclass(frozen=True)
class Step:
    """One transform: its type, input templates, output name and (``decode-base64-match``) its pattern."""

    type: TransformType
    inputs: tuple[str, ...]
    output: str
    regex_value: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type.value, "input": list(self.inputs), "output": self.output}
        if self.regex_value is not None:
            out["regexValue"] = self.regex_value
        return out


def render_transform(steps: Iterable[Step]) -> dict[str, Any] | list[dict[str, Any]]:
    """``transform`` as published: one object for one step (the current doc's shape [G6]), else an array."""
    rendered = [step.to_json() for step in steps]
    return rendered[0] if len(rendered) == 1 else rendered


@dataclass(frozen=True)
class Unresolved:
    """A template that did not resolve to a value, and why."""

    template: str
    detail: str


@dataclass(frozen=True)
class Scope:
    """What templates can name: the match's named groups and the outputs of the steps run so far."""

    groups: Mapping[str, str | None]
    outputs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def resolve(template: str, scope: Scope) -> str | Unresolved:
    """``template`` with every ``${...}`` replaced, or why one of them has no value.

    A group that did not participate, an output that was not produced, or a key the output lacks does not
    resolve; the empty string a participating group captured does.
    """
    parts: list[str] = []
    last = 0
    for m in TEMPLATE.finditer(template):
        parts.append(template[last : m.start()])
        last = m.end()
        value = _lookup(m.group(1), scope)
        if isinstance(value, Unresolved):
            return Unresolved(template, value.detail)
        parts.append(value)
    parts.append(template[last:])
    return "".join(parts)


def _lookup(reference: str, scope: Scope) -> str | Unresolved:
    ref = _REFERENCE.fullmatch(reference)
    if ref is None:
        return Unresolved(reference, f"${{{reference}}} is not ${{name}} or ${{output.key}}")
    name, key = ref.group(1), ref.group(2)
    if key is None:
        if name in scope.outputs:
            return Unresolved(reference, f"${{{name}}} is an output: name one of its keys, e.g. ${{{name}.c}}")
        if name not in scope.groups:
            return Unresolved(reference, f"no named group {name!r}")
        value = scope.groups[name]
        return Unresolved(reference, f"group {name!r} did not participate in the match") if value is None else value
    if name not in scope.outputs:
        return Unresolved(reference, f"no output {name!r} (yet)")
    output = scope.outputs[name]
    if key not in output:
        have = ", ".join(sorted(output)) or "none"
        return Unresolved(reference, f"output {name!r} has no key {key!r} (it has: {have})")
    return output[key]


@dataclass(frozen=True)
class StepResult:
    """What one step decoded, for explanations (``cells-operator route``) and logs."""

    step: Step
    output: Mapping[str, str]


@dataclass(frozen=True)
class Applied:
    """The rule applies: the interpolated classify value (None for rules without one) and what was decoded."""

    value: str | None
    outputs: Mapping[str, Mapping[str, str]]
    steps: tuple[StepResult, ...] = ()


@dataclass(frozen=True)
class NotApplied:
    """The rule matched but does not apply; the router goes on with the next rule (ADR 0014, decision 3).

    ``phase`` is ``transform``, ``validate`` or ``classify``; ``reason`` is CamelCase (a decoder's
    :class:`~cells_dataplane.routable_token.Reason`, ``UnresolvedInput``, ``NoMatch``, ``NotExist``,
    ``UnresolvedValue``); ``step`` is the failing transform's index.
    """

    phase: str
    reason: str
    detail: str
    step: int | None = None
    steps: tuple[StepResult, ...] = ()


@dataclass(frozen=True)
class Phases:
    """A rule's transform, validate and classify value, checked and with compiled patterns."""

    steps: tuple[Step, ...] = ()
    patterns: tuple[PatternLike | None, ...] = ()
    exist: tuple[str, ...] = ()
    classify_value: str | None = None

    def apply(self, groups: Mapping[str, str | None]) -> Applied | NotApplied:
        """Run transform -> validate -> classify over one request's captured groups (pure, never raises)."""
        outputs: dict[str, Mapping[str, str]] = {}
        done: list[StepResult] = []
        for index, (step, pattern) in enumerate(zip(self.steps, self.patterns, strict=True)):
            scope = Scope(groups, outputs)
            inputs: list[str] = []
            for template in step.inputs:
                value = resolve(template, scope)
                if isinstance(value, Unresolved):
                    detail = f"{_where(index, step)}: input {template}: {value.detail}"
                    return NotApplied("transform", "UnresolvedInput", detail, index, tuple(done))
                inputs.append(value)
            result = run_step(step, pattern, inputs)
            if isinstance(result, Failure):
                return NotApplied(
                    "transform", result.reason.value, f"{_where(index, step)}: {result.detail}", index, tuple(done)
                )
            if isinstance(result, Unresolved):
                return NotApplied("transform", "NoMatch", f"{_where(index, step)}: {result.detail}", index, tuple(done))
            outputs[step.output] = result
            done.append(StepResult(step, result))
        scope = Scope(groups, outputs)
        for template in self.exist:
            value = resolve(template, scope)
            if isinstance(value, Unresolved) or value == "":
                why = value.detail if isinstance(value, Unresolved) else "it is empty"
                return NotApplied("validate", "NotExist", f"validate.exist {template}: {why}", None, tuple(done))
        if self.classify_value is None:
            return Applied(None, outputs, tuple(done))
        value = resolve(self.classify_value, scope)
        if isinstance(value, Unresolved):
            return NotApplied(
                "classify",
                "UnresolvedValue",
                f"classify.value {self.classify_value}: {value.detail}",
                None,
                tuple(done),
            )
        return Applied(value, outputs, tuple(done))


def _where(index: int, step: Step) -> str:
    return f"transform {index + 1} ({step.type.value} -> {step.output})"


def run_step(step: Step, pattern: PatternLike | None, inputs: list[str]) -> dict[str, str] | Failure | Unresolved:
    """One transform over resolved inputs: the decoded keys (decimal strings), a decoder failure, or no match."""
    if step.type is TransformType.ROUTABLE_TOKEN_PAYLOAD:
        decoded = decode_routable_payload(inputs[0], inputs[1] if len(inputs) > 1 else None)
        return decoded if isinstance(decoded, Failure) else decoded.as_text()
    if step.type is TransformType.ROUTABLE_JSON:
        decoded = decode_routable_json(inputs[0])
        return decoded if isinstance(decoded, Failure) else decoded.as_text()
    assert pattern is not None  # parse_phases compiles one for every decode-base64-match step
    text = decode_base64_text(inputs[0])
    if isinstance(text, Failure):
        return text
    hit = pattern.search(text)
    if hit is None:
        return Unresolved(step.regex_value or "", f"the decoded value does not match regexValue {step.regex_value!r}")
    return {name: value for name, value in hit.named.items() if value is not None}


# --- reading and checking a rule's phases ---------------------------------------------------------------


def parse_phases(
    transform: Any = None,
    validate: Any = None,
    classify_value: str | None = None,
    group_names: Iterable[str] = (),
    compile_pattern: Compiler = compile_pattern,
) -> Phases | SpecProblem:
    """Read a rule's ``transform``, ``validate`` and ``classify.value`` (published JSON shapes) and check them.

    ``group_names`` are the named groups of the rule's match. Refused, each with its reason:
    ``InvalidTransform`` (shape), ``UnknownTransform``, ``InvalidTransformInput`` (count, not strings),
    ``InvalidOutputName``, ``DuplicateOutput``, ``OutputShadowsGroup``, ``MissingRegexValue``,
    ``RegexValueNotAllowed``, ``InvalidPattern`` / ``UnsupportedPattern`` (a step's ``regexValue``),
    ``InvalidValidate``, ``InvalidInterpolation`` (template syntax, ``${output}`` without a key, a key on
    a group), ``UnknownInterpolation`` (names no group and no output), ``OutputUsedBeforeDefined``,
    ``UnknownOutputKey`` (a key the step cannot produce), ``InvalidClassifyValue`` (not a string).
    """
    groups = tuple(group_names)
    if classify_value is not None and not isinstance(classify_value, str):
        return SpecProblem(
            "InvalidClassifyValue", f"classify.value must be a string, not {type(classify_value).__name__}"
        )
    raw_steps = _raw_steps(transform)
    if isinstance(raw_steps, SpecProblem):
        return raw_steps
    steps: list[Step] = []
    patterns: list[PatternLike | None] = []
    keys: dict[str, frozenset[str]] = {}  # output name -> the keys it can produce
    for index, raw in enumerate(raw_steps):
        step = _step(index, raw, groups, [s.output for s in steps])
        if isinstance(step, SpecProblem):
            return step
        pattern: PatternLike | None = None
        if step.regex_value is not None:
            try:
                pattern = compile_pattern(step.regex_value)
            except UnsupportedPattern as exc:
                return SpecProblem("UnsupportedPattern", f"transform {index + 1} regexValue: {exc}")
            except PatternError as exc:
                return SpecProblem("InvalidPattern", f"transform {index + 1} regexValue: {exc}")
        for template in step.inputs:
            problem = check_template(
                f"transform {index + 1} input", template, groups, keys, set(_later(raw_steps, index))
            )
            if problem:
                return problem
        keys[step.output] = frozenset(pattern.group_names) if pattern is not None else frozenset(ROUTING_KEYS)
        steps.append(step)
        patterns.append(pattern)
    exist = _exist(validate)
    if isinstance(exist, SpecProblem):
        return exist
    for template in exist:
        if problem := check_template("validate.exist", template, groups, keys):
            return problem
    if classify_value is not None and (problem := check_template("classify.value", classify_value, groups, keys)):
        return problem
    return Phases(tuple(steps), tuple(patterns), exist, classify_value)


def _raw_steps(transform: Any) -> list[dict[str, Any]] | SpecProblem:
    if transform is None:
        return []
    raw = [transform] if isinstance(transform, dict) else transform
    if not isinstance(raw, list) or not raw or not all(isinstance(s, dict) for s in raw):
        return SpecProblem("InvalidTransform", "transform is one step object or a non-empty array of step objects")
    if len(raw) > MAX_STEPS:
        return SpecProblem("InvalidTransform", f"{len(raw)} transform steps; at most {MAX_STEPS}")
    return raw


def _later(raw_steps: list[dict[str, Any]], index: int) -> Iterable[str]:
    """Output names of this and later steps: naming one in an input is using an output before it exists."""
    return (s["output"] for s in raw_steps[index:] if isinstance(s.get("output"), str))


def _step(index: int, raw: dict[str, Any], groups: tuple[str, ...], earlier: list[str]) -> Step | SpecProblem:
    where = f"transform {index + 1}"
    if unknown := sorted(set(raw) - STEP_FIELDS):
        return SpecProblem(
            "InvalidTransform", f"{where}: unknown field {unknown[0]!r} (fields: type, input, output, regexValue)"
        )
    try:
        kind = TransformType(raw.get("type", ""))  # missing: as unknown as any other value
    except ValueError:
        known = ", ".join(t.value for t in TransformType)
        return SpecProblem("UnknownTransform", f"{where}: type {raw.get('type')!r} is not one of {known}")
    inputs = raw.get("input")
    low, high = INPUT_COUNTS[kind]
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs) or not low <= len(inputs) <= high:
        count = str(low) if low == high else f"{low} or {high}"
        return SpecProblem(
            "InvalidTransformInput", f"{where}: {kind.value} takes input: a list of {count} template strings"
        )
    output = raw.get("output")
    if not isinstance(output, str) or not OUTPUT_NAME.fullmatch(output):
        return SpecProblem("InvalidOutputName", f"{where}: output {output!r} must be a name (letters, digits, '_')")
    if output in earlier:
        return SpecProblem("DuplicateOutput", f"{where}: output {output!r} is already the output of an earlier step")
    if output in groups:
        return SpecProblem("OutputShadowsGroup", f"{where}: output {output!r} is also a named group of the match")
    regex_value = raw.get("regexValue")
    if kind is TransformType.DECODE_BASE64_MATCH:
        if not isinstance(regex_value, str) or not regex_value:
            return SpecProblem(
                "MissingRegexValue", f"{where}: decode-base64-match needs regexValue, matched against the decoded value"
            )
    elif regex_value is not None:
        return SpecProblem("RegexValueNotAllowed", f"{where}: regexValue is only for decode-base64-match")
    return Step(kind, tuple(inputs), output, regex_value)


def _exist(validate: Any) -> tuple[str, ...] | SpecProblem:
    if validate is None:
        return ()
    exist = validate.get("exist") if isinstance(validate, dict) else None
    if (
        not isinstance(validate, dict)
        or set(validate) != {"exist"}
        or not isinstance(exist, list)
        or not exist
        or not all(isinstance(t, str) for t in exist)
    ):
        return SpecProblem("InvalidValidate", 'validate is {"exist": [templates, ...]} with at least one template')
    return tuple(exist)


def check_template(
    where: str,
    template: str,
    groups: Iterable[str],
    outputs: Mapping[str, frozenset[str]],
    later: set[str] | None = None,
) -> SpecProblem | None:
    """Why ``template`` can never resolve in this position, or None.

    ``groups`` are the match's named groups, ``outputs`` the outputs available here with the keys each can
    produce, ``later`` outputs of this or later steps (named too early).
    """
    if "$" in TEMPLATE.sub("", template):
        return SpecProblem(
            "InvalidInterpolation", f"{where} {template!r}: write interpolations as ${{name}} or ${{output.key}}"
        )
    group_list = list(groups)
    group_set = set(group_list)
    for reference in TEMPLATE.findall(template):
        ref = _REFERENCE.fullmatch(reference)
        if ref is None:
            return SpecProblem(
                "InvalidInterpolation", f"{where} {template!r}: ${{{reference}}} is not ${{name}} or ${{output.key}}"
            )
        name, key = ref.group(1), ref.group(2)
        if name in outputs:
            if key is None:
                return SpecProblem(
                    "InvalidInterpolation",
                    f"{where} {template!r}: ${{{name}}} is an output; name a key, e.g. ${{{name}.c}}",
                )
            if key not in outputs[name]:
                can = ", ".join(sorted(outputs[name])) or "none"
                return SpecProblem(
                    "UnknownOutputKey",
                    f"{where} {template!r}: output {name!r} never has key {key!r} (it can have: {can})",
                )
            continue
        if later and name in later:
            return SpecProblem(
                "OutputUsedBeforeDefined", f"{where} {template!r}: output {name!r} is produced by this or a later step"
            )
        if name in group_set:
            if key is not None:
                return SpecProblem(
                    "InvalidInterpolation", f"{where} {template!r}: {name!r} is a named group, it has no keys"
                )
            continue
        known = ", ".join([*group_list, *outputs]) or "none"
        return SpecProblem(
            "UnknownInterpolation",
            f"{where} {template!r}: {name!r} is neither a named group of the match nor an output (known: {known})",
        )
    return None
