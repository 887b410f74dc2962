"""How the published ``config.toml`` is composed: the user's base config verbatim, then the operator's cells.

GitLab's Topology Service reads one ``config.toml`` holding both its own settings and the ``[[cells]]``
tables. Whether a base is usable (it parses, it defines no ``cells``) is the operator's decision
(:mod:`cells_operator.base_config`); given a usable one, this is the format's rule for the merged file.
"""

from __future__ import annotations

import tomllib


def merge(base: str, cells_toml: str) -> str:
    """The base verbatim, then the operator's part (comments and ``[[cells]]`` tables only).

    Appending is safe because the operator's part holds nothing but array-of-tables headers under the
    ``cells`` key, which the caller made sure the base does not use (``cells_operator.base_config.check_base``).
    The result is parsed once more, so a merge that is not the base plus the cells can never be published.
    """
    merged = base.rstrip("\n") + "\n\n" + cells_toml if base.strip() else cells_toml
    expected = tomllib.loads(base)
    got = tomllib.loads(merged)
    cells = got.pop("cells", [])
    if got != expected or cells != tomllib.loads(cells_toml).get("cells", []):
        raise ValueError("merging the base config with the cells changed the base's keys")  # pragma: no cover
    return merged
