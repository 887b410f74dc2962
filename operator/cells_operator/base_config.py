"""The user's part of ``config.toml``: the Topology Service's own settings, merged with the operator's cells.

GitLab's Topology Service reads one ``config.toml`` holding both its own settings (``env``, ``[[serve]]``,
...) and the ``[[cells]]`` tables. The operator owns only the cells; the rest comes from a *base*: the
``config.toml`` key of a ConfigMap the user names (``--base-config-configmap``), in the namespace of the
topology. The published file is the base verbatim (comments and key order kept), then the operator's
``[[cells]]``, so the result is a complete, drop-in ``config.toml`` (ADR 0010); that composition is part
of the records format (:func:`cells_formats.base_config.merge`). This module decides whether a base is usable.

A base the operator cannot merge safely is a :class:`~cells_operator.cell.Problem`, never a guess: a base
that does not parse, or that defines ``cells`` itself (two owners of one table), holds the whole
publication and the last published file stays.
"""

from __future__ import annotations

import tomllib

from .cell import Problem

BASE_KEY = "config.toml"
# Status reasons (on every Cell of the namespace while the base is unusable).
BASE_CONFIG_NOT_FOUND = "BaseConfigNotFound"
INVALID_BASE_CONFIG = "InvalidBaseConfig"
BASE_CONFIG_DEFINES_CELLS = "BaseConfigDefinesCells"
REASONS = frozenset({BASE_CONFIG_NOT_FOUND, INVALID_BASE_CONFIG, BASE_CONFIG_DEFINES_CELLS})


def check_base(name: str, data: dict[str, str] | None) -> tuple[str | None, Problem | None]:
    """The base text of ConfigMap ``name`` (``data`` None: it does not exist), or why it is unusable."""
    if data is None:
        return None, Problem(
            BASE_CONFIG_NOT_FOUND, f"base config ConfigMap {name!r} does not exist (create it with a {BASE_KEY} key)"
        )
    text = data.get(BASE_KEY)
    if text is None:
        return None, Problem(INVALID_BASE_CONFIG, f"base config ConfigMap {name!r} has no {BASE_KEY} key")
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, Problem(INVALID_BASE_CONFIG, f"{BASE_KEY} of ConfigMap {name!r} is not valid TOML: {exc}")
    if "cells" in parsed:
        return None, Problem(
            BASE_CONFIG_DEFINES_CELLS,
            f"{BASE_KEY} of ConfigMap {name!r} defines cells itself; the operator owns [[cells]]: "
            "remove them from the base and describe cells as Cell resources",
        )
    return text, None
