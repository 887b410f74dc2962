"""The rule counts docs/benchmarks.md quotes under "ConfigMap size limit" stay true of the renderer
(tests/bench/configmap_limit.py computes them): a change in the rendering that moves them fails here."""

from __future__ import annotations

from cells_operator.publish import MAX_DATA_BYTES, values_size
from cells_operator.rulesets import MAX_CONFIGMAP_BYTES
from tests.bench.configmap_limit import QUOTED_HELD_AT as HELD_AT
from tests.bench.configmap_limit import QUOTED_REFUSED_AT as REFUSED_AT
from tests.bench.configmap_limit import unlimited


def test_typical_rules_are_held_back_from_the_quoted_count():
    assert unlimited(HELD_AT - 1).size <= MAX_CONFIGMAP_BYTES < unlimited(HELD_AT).size


def test_the_api_server_would_refuse_them_from_the_quoted_count():
    """The operator's limit leaves headroom: it holds back well before the API server would refuse."""
    assert values_size(unlimited(REFUSED_AT - 1).data) <= MAX_DATA_BYTES < values_size(unlimited(REFUSED_AT).data)
