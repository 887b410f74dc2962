"""The HTTP router's rules format: one definition, used by the operator to write and the router to read.

A ruleset is a JSON array evaluated top to bottom; the first rule that matches decides::

    {"match": {"type": "cookie", "regex_name": "...", "regex_value": "..."},
     "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"}}
    {"action": "proxy", "proxy": {"address": "host:port"}}

``match`` omitted matches every request; ``regex_name`` is absent for path matches; ``classify.value``
is absent for ``FIRST_CELL``; ``proxy`` omitted sends the request to the router's default upstream
(valid upstream, ADR 0010).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter


class _Format(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RouterMatch(_Format):
    type: Literal["cookie", "header", "path"]
    regex_name: str | None = None
    regex_value: str


class RouterClassify(_Format):
    type: Literal["SESSION_PREFIX", "CELL_ID", "FIRST_CELL"]
    value: str | None = None


class RouterProxy(_Format):
    address: str


class RouterRule(_Format):
    match: RouterMatch | None = None
    action: Literal["classify", "proxy"]
    classify: RouterClassify | None = None
    proxy: RouterProxy | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


_RULESET = TypeAdapter(list[RouterRule])


def parse_ruleset(text: str | bytes) -> list[RouterRule]:
    """Parse a ``<ruleset>.json``; raises ``ValueError`` (pydantic's ValidationError) on anything else."""
    try:
        value = json.loads(text)
    except RecursionError:  # found by tests/unit/test_fuzz_router.py: a ValueError like every other bad file
        raise ValueError("ruleset JSON nests too deeply to parse") from None
    return _RULESET.validate_python(value)
