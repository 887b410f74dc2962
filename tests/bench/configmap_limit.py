"""At how many rules the router ConfigMap reaches its size limit, computed with the operator's renderer.

All rulesets of a namespace share one router ConfigMap (one key per ruleset plus the index), so the limit
is on the namespace's rules together. The typical rule is the demo's session cookie rule
(deploy/samples/routingrules.yaml ``session-cookie``): a cookie match on ``^_gitlab_session(_[0-9a-f]+)?$``
with ``^(?<cell_name>cell-\\d+)-.*``, classify SESSION_PREFIX ``${cell_name}``, named
``session-cookie-NNNNN`` (20 characters) with a 36-character uid. ``python -m tests.bench.configmap_limit``
prints the numbers quoted in docs/benchmarks.md; tests/unit/test_configmap_limit.py keeps them true.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from cells_formats.records import Topology
from cells_operator.publish import MAX_DATA_BYTES, values_size
from cells_operator.rulesets import MAX_CONFIGMAP_BYTES, PublishedRules, RuleObject, RulesPlan, plan_rulesets
from tests.support.rules import SESSION

# What docs/benchmarks.md quotes (tests/unit/test_configmap_limit.py keeps them true of the renderer).
QUOTED_HELD_AT = 2_286  # the first typical rule over the operator's own limit (RulesetTooLarge)
QUOTED_REFUSED_AT = 2_397  # the first typical rule the API server itself would refuse


def typical_rules(count: int) -> list[RuleObject]:
    """``count`` session cookie rules, as a namespace with that many RoutingRules would hold them."""
    return [
        RuleObject(f"session-cookie-{i:05}", str(uuid.UUID(int=i)), {**SESSION, "priority": i}) for i in range(count)
    ]


def unlimited(count: int) -> RulesPlan:
    """The router ConfigMap for ``count`` typical rules, rendered without the size limit."""
    return plan_rulesets(typical_rules(count), Topology(), PublishedRules(), limit=10**12)


def first_count(over: Callable[[RulesPlan], bool], high: int = 10_000) -> int:
    """The smallest number of typical rules whose rendering is ``over`` a limit (bisection: sizes grow
    with every rule)."""
    low = 1
    while low < high:
        middle = (low + high) // 2
        if over(unlimited(middle)):
            high = middle
        else:
            low = middle + 1
    return low


def held_at() -> int:
    """The rule count at which a change is held back (RulesetTooLarge): over the operator's own limit of
    1,000,000 bytes, keys plus values (headroom under the API server's 1 MiB)."""
    return first_count(lambda plan: plan.size > MAX_CONFIGMAP_BYTES)


def refused_at() -> int:
    """The rule count at which the API server itself would refuse the ConfigMap (values over 1 MiB)."""
    return first_count(lambda plan: values_size(plan.data) > MAX_DATA_BYTES)


def bytes_per_rule() -> float:
    """The marginal size of one more typical rule (its ruleset element plus its index entry)."""
    return (unlimited(2000).size - unlimited(1000).size) / 1000


def main() -> None:
    print(f"bytes per typical rule: {bytes_per_rule():.0f}")
    print(f"held back (RulesetTooLarge) from rule {held_at():,} ({MAX_CONFIGMAP_BYTES:,} bytes)")
    print(f"the API server would refuse it from rule {refused_at():,} ({MAX_DATA_BYTES:,} bytes of values)")


if __name__ == "__main__":
    main()
