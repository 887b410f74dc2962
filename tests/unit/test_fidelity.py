"""Fidelity to GitLab's own Topology Service and HTTP router (issue 13, ADR 0010): the pure parts."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from cells_dataplane.router import UPSTREAM_ACTION_HEADER, UPSTREAM_TYPE_HEADER, rule_headers
from cells_dataplane.routing import Decision, RequestView, load_ruleset, upstream_base
from cells_formats.fields import SequenceRange, address_problem, split_address
from cells_formats.records import CellRecord, Topology, render_config_toml, render_records
from cells_operator.admission import review_cell
from cells_operator.base_config import check_base
from cells_operator.cell import ADDRESS_PATTERN
from cells_operator.rule import RoutingRuleSpec, render_rule
from cells_operator.topology import CellObject, plan_topology

ROOT = Path(__file__).resolve().parents[2]
VALID = [
    "cell-2.gitlab.example",  # GitLab.com style: bare hostname
    "cell-2.gitlab.example:443",
    "localhost",
    "gdk.test:12001",
    "10.0.0.7",
    "10.0.0.7:8080",
    "[::1]",
    "[::1]:8080",
    "[2001:db8::42]:443",
    "a",
]
INVALID = [
    "",
    ":8080",
    "host:",
    "host:0",
    "host:65536",
    "host:http",
    "::1",  # IPv6 must be bracketed
    "::1:8080",
    "[::1",
    "[not-v6]:80",
    "[::1]8080",
    "[::1]:",
    "300.1.1.1",
    "1.2.3",
    "under_score.example",
    "-leading.example",
    "trailing-.example",
    "http://cell-2.example",
    "cell-2.example/path",
    "host:80:90",
]


def crd(name: str) -> dict:
    return yaml.safe_load((ROOT / "crds" / name).read_text())


def cell_address_schema() -> dict:
    schema = crd("cells.dev_cells.yaml")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]["properties"]["address"]


@pytest.mark.parametrize("address", VALID)
def test_addresses_as_upstream_writes_them_are_accepted_everywhere(address):
    assert address_problem(address) is None
    schema = cell_address_schema()
    assert re.search(schema["pattern"], address), "the CRD schema must let it through too"
    assert schema["minLength"] <= len(address) <= schema["maxLength"]
    p = plan_topology(Topology(), [CellObject("c", "u", {"id": 2, "address": address})])
    assert p.verdicts["c"].problem is None
    assert p.records.record("c").address == address
    assert tomllib.loads(render_config_toml(p.records))["cells"][0]["address"] == address
    review = review_cell(
        {"metadata": {"name": "c", "uid": "u", "generation": 1}, "spec": {"id": 2, "address": address}},
        None,
        [],
        Topology(),
    )
    assert review.problem is None


@pytest.mark.parametrize("address", INVALID)
def test_bad_addresses_are_refused_with_a_reason(address):
    assert address_problem(address)
    p = plan_topology(Topology(), [CellObject("c", "u", {"id": 2, "address": address})])
    assert p.verdicts["c"].problem.reason == "InvalidAddress"
    assert p.records.record("c") is None
    spec = RoutingRuleSpec.model_validate({"ruleset": "r", "action": "proxy", "proxy": {"address": address}})
    element, problem = render_rule(spec, Topology())
    if address:  # an empty address is "no address": the default upstream
        assert element is None and problem.reason == "InvalidAddress"


def test_the_crd_pattern_is_the_one_the_code_documents():
    assert cell_address_schema()["pattern"] == ADDRESS_PATTERN


@pytest.mark.parametrize(
    ("address", "parts"),
    [
        ("cell-2.example", ("cell-2.example", None)),
        ("cell-2.example:8443", ("cell-2.example", 8443)),
        ("[::1]", ("[::1]", None)),
        ("[::1]:8080", ("[::1]", 8080)),
        ("10.0.0.1:80", ("10.0.0.1", 80)),
    ],
)
def test_split_address(address, parts):
    assert split_address(address) == parts


@pytest.mark.parametrize(
    ("address", "scheme", "base"),
    [
        ("cell-2.gitlab.example", "auto", "https://cell-2.gitlab.example"),  # 443
        ("cell-2.gitlab.example:8080", "auto", "http://cell-2.gitlab.example:8080"),
        ("127.0.0.1:18002", "auto", "http://127.0.0.1:18002"),
        ("[::1]", "auto", "https://[::1]"),
        ("[::1]:8080", "auto", "http://[::1]:8080"),
        ("cell-2.gitlab.example", "http", "http://cell-2.gitlab.example"),  # 80
        ("cell-2.gitlab.example:8443", "https", "https://cell-2.gitlab.example:8443"),
    ],
)
def test_the_router_chooses_scheme_and_port_deliberately(address, scheme, base):
    assert upstream_base(address, scheme) == base


def test_upstream_base_refuses_what_it_cannot_dial():
    with pytest.raises(ValueError, match="IPv6"):
        upstream_base("::1")
    with pytest.raises(ValueError, match="scheme"):
        upstream_base("a:1", "gopher")


def test_proxy_without_address_is_published_without_proxy_and_routes_to_the_default():
    for proxy in (None, {}):
        spec = {"ruleset": "r", "action": "proxy", "match": {"type": "path", "regexValue": "^/-/health"}}
        if proxy is not None:
            spec["proxy"] = proxy
        element, problem = render_rule(RoutingRuleSpec.model_validate(spec), Topology())
        assert problem is None
        assert element == {"match": {"type": "path", "regexValue": "^/-/health"}, "action": "proxy"}
    ruleset = load_ruleset(json.dumps([element, {"action": "classify", "classify": {"type": "FIRST_CELL"}}]))
    decision = ruleset.decide(RequestView.build("/-/health", []))
    assert (decision.action, decision.address, decision.classify_type) == ("proxy", None, None)


def test_proxy_with_both_targets_is_still_refused():
    spec = {"ruleset": "r", "action": "proxy", "proxy": {"cellRef": "a", "address": "a:1"}}
    assert render_rule(RoutingRuleSpec.model_validate(spec), Topology())[1].reason == "InvalidProxy"


@pytest.mark.parametrize(
    ("decision", "headers"),
    [
        (
            Decision(0, "classify", "SESSION_PREFIX", "cell-2"),
            [(UPSTREAM_ACTION_HEADER, "classify"), (UPSTREAM_TYPE_HEADER, "SESSION_PREFIX")],
        ),
        (
            Decision(1, "classify", "FIRST_CELL"),
            [(UPSTREAM_ACTION_HEADER, "classify"), (UPSTREAM_TYPE_HEADER, "FIRST_CELL")],
        ),
        (Decision(2, "proxy", address="a:1"), [(UPSTREAM_ACTION_HEADER, "proxy")]),  # no type for proxy
    ],
)
def test_rule_headers_are_upstreams(decision, headers):
    assert rule_headers(decision) == headers
    # the names GitLab Rails reads (Gitlab::HttpRouter::RuleContext)
    assert UPSTREAM_ACTION_HEADER == "X-Gitlab-Http-Router-Rule-Action"
    assert UPSTREAM_TYPE_HEADER == "X-Gitlab-Http-Router-Rule-Type"


BASE = """# Topology Service settings, owned by the platform team
env = "production"

[[serve]]
address = ":9095"
grpc = true

[spanner]
database = "projects/p/instances/i/databases/topology"
"""


def test_base_config_is_kept_verbatim_and_the_cells_are_added():

    base, problem = check_base("ts-base", {"config.toml": BASE})
    assert problem is None
    cell = CellRecord(
        name="c",
        uid="u",
        id=2,
        address="cell-2.gitlab.example",
        session_prefix="cell-2",
        state="Active",
        sequence_ranges=(SequenceRange(minval=1, maxval=10),),
    )
    text = render_records(Topology(revision=3, cells=(cell,)), base)["config.toml"]
    assert text.startswith(BASE)  # their part verbatim, comments and order included
    doc = tomllib.loads(text)
    assert doc["env"] == "production"
    assert doc["serve"] == [{"address": ":9095", "grpc": True}]
    assert doc["spanner"] == {"database": "projects/p/instances/i/databases/topology"}
    assert doc["cells"] == [
        {
            "id": 2,
            "address": "cell-2.gitlab.example",
            "session_prefix": "cell-2",
            "sequence_ranges": [{"minval": 1, "maxval": 10}],
        }
    ]
    # an empty base is allowed: only the cells
    assert tomllib.loads(render_records(Topology(cells=(cell,)), "")["config.toml"]) == {"cells": doc["cells"]}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "BaseConfigNotFound"),
        ({"other.toml": "env = 1"}, "InvalidBaseConfig"),
        ({"config.toml": "env = "}, "InvalidBaseConfig"),
        ({"config.toml": "[[cells]]\nid = 1\n"}, "BaseConfigDefinesCells"),
        ({"config.toml": "cells = []\n"}, "BaseConfigDefinesCells"),
        ({"config.toml": "[cells.extra]\nx = 1\n"}, "BaseConfigDefinesCells"),
    ],
)
def test_an_unusable_base_config_is_a_problem_with_a_reason(data, reason):

    text, problem = check_base("ts-base", data)
    assert text is None
    assert problem.reason == reason
    assert "'ts-base'" in problem.message
