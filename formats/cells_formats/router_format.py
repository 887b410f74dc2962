"""The HTTP router's rules format: one definition, used by the operator to write and the router to read.

A ruleset is a JSON array evaluated top to bottom; the first rule that applies decides. Two dialects
(ADR 0014, docs/compatibility.md), told apart by the spelling of ``match``:

- **current** (GitLab's current router doc [G6]): ``id``; ``match.name`` (a literal header or cookie
  name) or ``match.regexName`` (a pattern: this project's extension), and ``match.regexValue``;
  ``transform`` (one step object or an array of steps) and ``validate``::

    {"id": "pat", "match": {"type": "header", "name": "private-token", "regexValue": "...(?<payload>...)..."},
     "transform": {"type": "routable-token-payload", "input": ["${payload}", "${payload_length}"],
                   "output": "decoded"},
     "validate": {"exist": ["${decoded.c}"]},
     "action": "classify", "classify": {"type": "CELL_ID", "value": "${decoded.c}"}}

- **2024**: ``match.regex_name`` / ``match.regex_value``, no id, no transform or validate::

    {"match": {"type": "cookie", "regex_name": "...", "regex_value": "..."},
     "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"}}

In both, ``match`` omitted matches every request; path matches have no name; ``classify.value`` is
absent for ``FIRST_CELL``; ``{"action": "proxy"}`` without ``proxy`` sends the request to the router's
default upstream (valid upstream, ADR 0010). ``transform`` and ``validate`` are kept as JSON here and
checked by :func:`cells_dataplane.transforms.parse_phases` when the router compiles the ruleset.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

# ``${name}`` in ``classify.value``: a named group of the match, substituted by the router. One definition:
# the operator validates interpolations with it, the router applies them with it.
INTERPOLATION = re.compile(r"\$\{([^}]*)\}")


class Dialect(StrEnum):
    """The shape of the published ruleset (ADR 0014, docs/compatibility.md)."""

    CURRENT = "current"  # id, match.name / regexValue, transform, validate: GitLab's current router doc [G6]
    V2024 = "2024"  # match.regex_name / regex_value, no id, no transform or validate


DIALECT_ENV = "CELLS_ROUTER_DIALECT"  # the operator Deployment's setting; read by render/validate too


def parse_dialect(raw: str) -> Dialect:
    """``current`` or ``2024`` (empty: current), with an error that names the setting."""
    try:
        return Dialect(raw.strip() or Dialect.CURRENT.value)
    except ValueError:
        raise ValueError(f"{DIALECT_ENV}={raw!r}: expected one of {', '.join(d.value for d in Dialect)}") from None


class _Format(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


_NO_VALUE_PATTERN = "match needs regexValue (current dialect) or regex_value (2024 dialect)"


class RouterMatch(_Format):
    type: Literal["cookie", "header", "path"]
    name: str | None = None  # current dialect: literal name
    regex_name: str | None = None  # 2024 dialect
    regex_value: str | None = None  # 2024 dialect
    current_regex_name: str | None = Field(None, alias="regexName")
    current_regex_value: str | None = Field(None, alias="regexValue")

    @model_validator(mode="after")
    def _one_dialect(self) -> RouterMatch:
        old = self.regex_name is not None or self.regex_value is not None
        new = self.name is not None or self.current_regex_name is not None or self.current_regex_value is not None
        if old and new:
            raise ValueError("match mixes the 2024 spelling (regex_name, regex_value) with the current one")
        if self.current_regex_value is None and self.regex_value is None:
            raise ValueError(_NO_VALUE_PATTERN)
        if self.name is not None and self.current_regex_name is not None:
            raise ValueError("match takes one of name and regexName")
        return self

    @property
    def dialect(self) -> str:
        return "2024" if self.regex_value is not None else "current"

    @property
    def value_pattern(self) -> str:
        pattern = self.current_regex_value if self.current_regex_value is not None else self.regex_value
        if pattern is None:  # only a match built without validation: _one_dialect refuses it
            raise ValueError(_NO_VALUE_PATTERN)
        return pattern

    @property
    def name_pattern(self) -> str | None:
        return self.current_regex_name if self.current_regex_name is not None else self.regex_name


class RouterClassify(_Format):
    type: Literal["SESSION_PREFIX", "CELL_ID", "FIRST_CELL"]
    value: str | None = None


class RouterProxy(_Format):
    address: str


class RouterRule(_Format):
    id: str | None = None
    match: RouterMatch | None = None
    transform: dict[str, Any] | list[dict[str, Any]] | None = None
    validate_: dict[str, Any] | None = Field(None, alias="validate")
    action: Literal["classify", "proxy"]
    classify: RouterClassify | None = None
    proxy: RouterProxy | None = None

    @model_validator(mode="after")
    def _dialect_fields(self) -> RouterRule:
        if self.dialect == "2024" and (self.id is not None or self.transform is not None or self.validate_ is not None):
            raise ValueError("a 2024-dialect rule (regex_value) has no id, transform or validate")
        return self

    @property
    def dialect(self) -> str:
        """``2024`` for rules spelled ``regex_value`` and for rules without match, id, transform or validate."""
        if self.match is not None:
            return self.match.dialect
        current = self.id is not None or self.transform is not None or self.validate_ is not None
        return "current" if current else "2024"

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


_RULESET = TypeAdapter(list[RouterRule])


def parse_ruleset(text: str | bytes) -> list[RouterRule]:
    """Parse a ``<ruleset>.json``; raises ``ValueError`` (pydantic's ValidationError) on anything else."""
    try:
        value = json.loads(text)
    except RecursionError:  # found by tests/unit/test_fuzz_router.py: a ValueError like every other bad file
        raise ValueError("ruleset JSON nests too deeply to parse") from None
    return _RULESET.validate_python(value)
