"""mypy's strict tier is the import-linter core, in one place each: this test keeps the two lists equal.

``make lint`` runs mypy strict on the core modules and the wire formats (issue 12). The core is defined by
the import-linter contract "The core decides without kopf, ...": a module that joins the core there (say
``gitops`` once its reporting is pure) must also be held to --strict, and a list that silently drifts would
leave it checked by default rules only.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE_CONTRACT_PREFIX = "The core decides without kopf"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _strict_modules(config: dict) -> set[str]:
    """The modules of the mypy override that turns the strict flags on."""
    overrides = [o for o in config["tool"]["mypy"]["overrides"] if o.get("disallow_untyped_defs")]
    assert len(overrides) == 1, "expected one override carrying the strict flags"
    return set(overrides[0]["module"])


def test_mypy_strict_tier_is_the_import_linter_core_plus_the_wire_formats() -> None:
    config = _pyproject()
    contracts = [c for c in config["tool"]["importlinter"]["contracts"] if c["name"].startswith(CORE_CONTRACT_PREFIX)]
    assert len(contracts) == 1
    core = set(contracts[0]["source_modules"])
    assert _strict_modules(config) == core | {"cells_formats.*"}
