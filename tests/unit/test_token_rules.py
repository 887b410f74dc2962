"""Routable-token rules through the whole pipeline without a cluster (issue 18, ADR 0014).

The shipped samples are planned exactly as the operator plans them, the published ruleset is loaded by the
reference router's own loader, and requests carrying *generated* tokens (tests/support/tokens.py) of every
routable kind are decided: the router must classify them by ``CELL_ID`` with the decimal cell id the token
names, and fall through to the catch-all when a token does not decode. The refusals the planner and
admission give for rules that could never work are checked reason by reason.
"""

from __future__ import annotations

import functools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cells_dataplane.routing import RequestView, load_ruleset
from cells_formats.fields import CellState, SequenceRange
from cells_formats.records import CellRecord, Topology
from cells_formats.router_format import parse_ruleset
from cells_operator.admission import review_rule
from cells_operator.config import OperatorConfig
from cells_operator.route_explain import Rules, explain, human
from cells_operator.rule import (
    DIALECT_ENV,
    Dialect,
    RoutingRuleSpec,
    parse_rule_spec,
    render_rule,
    spec_of_element,
)
from cells_operator.rulesets import PublishedRules, RuleObject, parse_published, plan_rulesets
from tests.support.rules import SAMPLE_SPECS
from tests.support.tokens import basic_authorization, job_token, personal_access_token, runner_token

TOKEN_RULES = [name for name in SAMPLE_SPECS if name.startswith("token-")]
TOPO = Topology(
    cells=tuple(
        CellRecord(
            name=f"cell-{i}",
            uid=f"u{i}",
            id=i,
            address=f"cell-{i}:443",
            session_prefix=f"cell-{i}",
            state=CellState.ACTIVE,
            sequence_ranges=(SequenceRange(minval=i * 10, maxval=i * 10 + 9),),
        )
        for i in (1, 2, 37)
    )
)


def published(dialect: Dialect = Dialect.CURRENT, specs: dict | None = None):
    specs = SAMPLE_SPECS if specs is None else specs
    objects = [RuleObject(name, f"uid-{name}", spec) for name, spec in specs.items()]
    return plan_rulesets(objects, TOPO, PublishedRules(), dialect=dialect)


def sample_router():
    plan = published()
    assert all(v.problem is None for v in plan.verdicts.values()), plan.verdicts
    return load_ruleset(plan.data["session_token.json"]), plan


def kinds(cell: int | None) -> dict[str, list[tuple[str, str]]]:
    """One request header set per routable kind, with tokens minted for ``cell`` (generated, never copied)."""
    pat = personal_access_token(cell, 1, 1234)
    return {
        "token-private-token": [("PRIVATE-TOKEN", pat)],
        "token-bearer": [("Authorization", f"Bearer {pat}")],
        "token-runner": [("RUNNER-TOKEN", runner_token(cell, 1, group=77))],
        "token-job": [("JOB-TOKEN", job_token(cell, 1, 1234, project=5))],
        "token-basic": [("Authorization", basic_authorization("oauth2", personal_access_token(cell, 1, 9)))],
        "token-basic-job": [("Authorization", basic_authorization("gitlab-ci-token", job_token(cell, 1, 9)))],
    }


@pytest.mark.parametrize("cell", [2, 37])
@pytest.mark.parametrize("kind", TOKEN_RULES)
def test_every_routable_kind_is_classified_by_the_cell_id_it_names(kind, cell):
    """Cell 37 is ``11`` in base36: the value must be the decimal id (ADR 0014 decision 1)."""
    ruleset, plan = sample_router()
    decision = ruleset.decide(RequestView.build("/api/v4/user", kinds(cell)[kind]))
    assert decision is not None
    assert (decision.classify_type, decision.value) == ("CELL_ID", str(cell))
    assert decision.index == plan.verdicts[kind].position


@pytest.mark.parametrize("kind", TOKEN_RULES)
def test_a_token_without_cell_falls_through_to_the_catch_all(kind):
    ruleset, plan = sample_router()
    decision = ruleset.decide(RequestView.build("/api/v4/user", kinds(None)[kind]))
    assert decision is not None and decision.classify_type == "FIRST_CELL"
    assert decision.index == plan.verdicts["catch-all"].position


def test_a_corrupt_token_still_routes_by_its_payload_and_route_says_the_crc_is_broken():
    """The router does not check the CRC (decision 5); ``cells-operator route`` does and says so."""
    ruleset, plan = sample_router()
    token = personal_access_token(2, 1, 1234)
    corrupt = token[:-1] + ("0" if token[-1] != "0" else "1")
    rules = Rules(
        "session_token",
        ruleset,
        tuple(
            json.loads(plan.data["cells-operator.index.json"])["session_token"][i]["name"]
            for i in range(len(ruleset.rules))
        ),
    )
    e = explain(rules, TOPO, "/api/v4/user", headers=[("PRIVATE-TOKEN", corrupt)])
    assert e.classify_request == {"type": "CELL_ID", "value": "2"} and e.address == "cell-2:443"
    assert e.decoded == [
        {"type": "routable-token-payload", "output": "decoded", "keys": {"c": "2", "o": "1", "u": "1234"}}
    ]
    assert e.token_checks and "BadCrc" in e.token_checks[0]
    text = human(e)
    assert (
        "rule 'token-private-token'" in text and "transform routable-token-payload -> decoded: c=2, o=1, u=1234" in text
    )
    good = explain(rules, TOPO, "/api/v4/user", headers=[("PRIVATE-TOKEN", token)])
    assert good.token_checks == ["private-token: token CRC intact"]


def test_route_explains_a_rule_that_matched_but_did_not_apply():
    ruleset, plan = sample_router()
    names = tuple(e["name"] for e in json.loads(plan.data["cells-operator.index.json"])["session_token"])
    e = explain(Rules("session_token", ruleset, names), TOPO, "/api/v4/user", headers=kinds(None)["token-job"])
    why = {s.label: s.why for s in e.skipped}
    assert why["position 6 (rule 'token-job')"].startswith("matched, but does not apply: validate NotExist")


def test_current_dialect_publishes_id_literal_name_and_a_single_step_as_an_object():
    element, problem = render_rule(
        RoutingRuleSpec.model_validate(SAMPLE_SPECS["token-private-token"]), TOPO, name="pat"
    )
    assert problem is None
    assert element["id"] == "pat"
    assert element["match"]["name"] == "private-token" and "regexValue" in element["match"]
    assert element["transform"] == {
        "type": "routable-token-payload",
        "input": ["${payload}", "${payload_length}"],
        "output": "decoded",
    }
    assert element["validate"] == {"exist": ["${decoded.c}"]}
    chain = render_rule(RoutingRuleSpec.model_validate(SAMPLE_SPECS["token-basic"]), TOPO, name="b")[0]
    assert isinstance(chain["transform"], list) and len(chain["transform"]) == 2


def test_spec_id_overrides_the_name_and_header_names_are_published_lower_case():
    spec = {**SAMPLE_SPECS["token-private-token"], "id": "session_token_header_private_token"}
    spec["match"] = {**spec["match"], "name": "PRIVATE-TOKEN"}
    element, _ = render_rule(RoutingRuleSpec.model_validate(spec), TOPO, name="x")
    assert element["id"] == "session_token_header_private_token" and element["match"]["name"] == "private-token"


def test_2024_dialect_refuses_transforms_and_translates_literal_names():
    plan = published(Dialect.V2024)
    for name in TOKEN_RULES:
        problem = plan.verdicts[name].problem
        assert problem is not None and problem.reason == "NotInDialect", name
        assert "transform and validate" in problem.message
    rules = json.loads(plan.data["session_token.json"])
    assert all("id" not in r for r in rules)
    assert rules[0]["match"] == {
        "type": "cookie",
        "regex_name": "^force-cell$",
        "regex_value": "^(?<cell_name>cell-\\d+)$",
    }
    literal = {"ruleset": "r", "action": "classify", "classify": {"type": "CELL_ID", "value": "${id}"}}
    literal["match"] = {"type": "header", "name": "X-Cell.Id", "regexValue": "^(?<id>\\d+)$"}
    element, _ = render_rule(RoutingRuleSpec.model_validate(literal), TOPO, dialect=Dialect.V2024)
    assert element["match"]["regex_name"] == "^x-cell\\.id$"
    router = load_ruleset(json.dumps([element]))
    assert router.decide(RequestView.build("/", [("X-Cell.Id", "2")])).value == "2"
    assert router.decide(RequestView.build("/", [("x-cellaid", "2")])) is None


def test_the_2024_ruleset_is_what_the_router_read_before():
    """Both dialects of the non-token samples decide the same requests the same way."""
    specs = {k: v for k, v in SAMPLE_SPECS.items() if k not in TOKEN_RULES}
    old = load_ruleset(published(Dialect.V2024, specs).data["session_token.json"])
    new = load_ruleset(published(Dialect.CURRENT, specs).data["session_token.json"])
    for headers, path in [
        ([("Cookie", "force-cell=cell-3")], "/"),
        ([("Cookie", "_gitlab_session=cell-2-abc")], "/"),
        ([], "/api/v4/cells/37/x"),
        ([], "/"),
    ]:
        request = RequestView.build(path, headers)
        assert old.decide(request) == new.decide(request)


def test_dialect_comes_from_the_environment():
    """``CELLS_ROUTER_DIALECT`` is read once, into the configuration; the planner is told, never looks."""
    assert OperatorConfig.from_env({}).router_dialect is Dialect.CURRENT
    config = OperatorConfig.from_env({DIALECT_ENV: "2024"})
    assert config.router_dialect is Dialect.V2024
    published = plan_rulesets(
        [RuleObject("s", "u", SAMPLE_SPECS["session-cookie"])], TOPO, PublishedRules(), dialect=config.router_dialect
    )
    assert "regex_value" in json.loads(published.data["session_token.json"])[0]["match"]
    with pytest.raises(ValueError, match="expected one of current, 2024"):
        OperatorConfig.from_env({DIALECT_ENV: "2023"})


PAT = SAMPLE_SPECS["token-private-token"]
BASIC = SAMPLE_SPECS["token-basic"]


def with_(base: dict, **changes) -> dict:
    return {**base, **changes}


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (with_(PAT, transform=[{**PAT["transform"][0], "type": "routable-magic"}]), "UnknownTransform"),
        (with_(PAT, transform=[{**PAT["transform"][0], "input": ["${token}"]}]), "UnknownInterpolation"),
        (with_(PAT, transform=[{**PAT["transform"][0], "input": []}]), "InvalidTransformInput"),
        (with_(PAT, transform=[]), "InvalidTransform"),
        (with_(PAT, validate={"exist": ["${decoded.cell}"]}), "UnknownOutputKey"),
        (with_(PAT, classify={"type": "CELL_ID", "value": "${decoded}"}), "InvalidInterpolation"),
        (with_(PAT, classify={"type": "CELL_ID", "value": "${other.c}"}), "UnknownInterpolation"),
        (with_(BASIC, transform=list(reversed(BASIC["transform"]))), "OutputUsedBeforeDefined"),
        (
            with_(BASIC, transform=[{k: v for k, v in BASIC["transform"][0].items() if k != "regexValue"}]),
            "MissingRegexValue",
        ),
        (with_(PAT, transform=[{**PAT["transform"][0], "regexValue": "x"}]), "RegexValueNotAllowed"),
        (
            with_(BASIC, transform=[{**BASIC["transform"][0], "regexValue": "(unclosed"}, BASIC["transform"][1]]),
            "InvalidPattern",
        ),
        (with_(BASIC, transform=[{**BASIC["transform"][0], "regexValue": "^(a+)+$"}]), "CatastrophicPattern"),
        (with_(PAT, transform=[{**PAT["transform"][0], "output": "payload"}]), "OutputShadowsGroup"),
        (with_(PAT, match={**PAT["match"], "regexName": "^x$"}), "ConflictingName"),
        (with_(PAT, match={"type": "path", "name": "x", "regexValue": "^/"}), "NameNotAllowed"),
        (with_(PAT, match={"type": "header", "name": "bad name", "regexValue": "^/"}), "InvalidName"),
        (with_(PAT, match={"type": "header", "regexValue": "^/"}), "MissingRegexName"),
        (with_(PAT, id="-bad"), "InvalidId"),
    ],
)
def test_refusals_are_precise_and_admission_gives_the_same(spec, reason, monkeypatch):
    """The planner's reason is the condition reason; admission refuses the same spec with it."""
    if reason == "CatastrophicPattern":
        from cells_operator import redos

        if redos.find_recheck() is None:
            pytest.skip("the ReDoS checker is not installed: run make recheck")
    parsed, problem = parse_rule_spec(spec)
    assert problem is None, problem
    element, problem = render_rule(parsed, TOPO, name="r")
    assert element is None and problem is not None and problem.reason == reason, problem
    review = review_rule({"metadata": {"name": "r"}, "spec": spec}, None, TOPO)
    assert review.problem is not None and review.problem.reason == reason


def test_a_second_rule_with_the_same_id_in_a_ruleset_is_refused():
    specs = {
        "a": with_(PAT, id="pat"),
        "b": with_(SAMPLE_SPECS["token-bearer"], id="pat"),
        "pat": SAMPLE_SPECS["catch-all"],
    }
    plan = published(specs=specs)
    assert plan.verdicts["a"].problem is None
    assert plan.verdicts["b"].problem.reason == "DuplicateId" and plan.verdicts["b"].live is None
    assert plan.verdicts["pat"].problem.reason == "DuplicateId"  # its default id is its name


@pytest.mark.parametrize("dialect", list(Dialect))
def test_spec_of_element_renders_back_to_the_same_element(dialect):
    """``cells-operator render`` keeps published-but-undeclared rules by rebuilding their spec from the element."""
    plan = published(dialect)
    for verdict in plan.verdicts.values():
        if verdict.live is None:
            continue
        live = verdict.live
        spec = RoutingRuleSpec.model_validate(spec_of_element(live.ruleset, live.priority, live.element))
        assert render_rule(spec, TOPO, name=live.name, dialect=dialect) == (live.element, None)


def test_published_rules_round_trip_through_the_router_format_in_both_dialects():
    for dialect in Dialect:
        text = published(dialect).data["session_token.json"]
        assert [r.to_json() for r in parse_ruleset(text)] == json.loads(text)


@pytest.mark.parametrize(
    "element",
    [
        {"match": {"type": "path", "regex_value": "^/", "regexValue": "^/"}, "action": "proxy"},
        {"id": "x", "match": {"type": "path", "regex_value": "^/"}, "action": "proxy"},
        {"match": {"type": "path", "regex_value": "^/"}, "transform": {}, "action": "proxy"},
        {"match": {"type": "header", "name": "a", "regexName": "b", "regexValue": "^/"}, "action": "proxy"},
        {"match": {"type": "path"}, "action": "proxy"},
    ],
)
def test_the_router_refuses_mixed_or_incomplete_dialects(element):
    with pytest.raises(ValueError):
        load_ruleset(json.dumps([element]))


def test_the_router_refuses_phases_that_cannot_work():
    element = {"id": "x", "match": {"type": "header", "name": "a", "regexValue": "^(?<v>.*)$"}, "action": "classify"}
    element["classify"] = {"type": "CELL_ID", "value": "${decoded.c}"}
    with pytest.raises(ValueError, match="rule 'x': UnknownInterpolation"):
        load_ruleset(json.dumps([element]))


def test_every_spec_field_has_a_description():
    """The CRD will be generated from these models (another change): every field must document itself."""
    from cells_operator import rule

    models = [
        rule.RoutingRuleSpec,
        rule.MatchSpec,
        rule.TransformStepSpec,
        rule.ValidateSpec,
        rule.ClassifySpec,
        rule.ProxySpec,
    ]
    missing = [f"{m.__name__}.{n}" for m in models for n, f in m.model_fields.items() if not f.description]
    assert missing == []


def test_switching_to_2024_withdraws_token_rules_instead_of_mixing_dialects():
    """The last-valid-version policy keeps an old element only if it is in the dialect being published."""
    current = published(Dialect.CURRENT)
    objects = [RuleObject(name, f"uid-{name}", spec) for name, spec in SAMPLE_SPECS.items()]
    switched = plan_rulesets(objects, TOPO, parse_published(current.data), dialect=Dialect.V2024)
    rules = json.loads(switched.data["session_token.json"])
    assert all("regexValue" not in (r.get("match") or {}) and "id" not in r for r in rules)
    assert switched.verdicts["token-job"].live is None
    assert switched.verdicts["token-job"].problem.reason == "NotInDialect"


_ROUTER = functools.cache(lambda: sample_router()[0])


@settings(max_examples=150, deadline=None)
@given(
    cell=st.integers(min_value=1, max_value=2**62),
    organization=st.integers(min_value=1, max_value=2**40),
    kind=st.sampled_from(TOKEN_RULES),
)
def test_any_cell_id_round_trips_through_the_published_rules(cell, organization, kind):
    """Generation -> published sample rules -> router decision, for any cell id: the decimal id comes back."""
    headers = kinds(cell)[kind]
    if kind != "token-private-token":  # vary the organization too where the generator takes it first
        headers = {
            "token-bearer": [("Authorization", f"Bearer {personal_access_token(cell, organization, 1)}")],
            "token-runner": [("RUNNER-TOKEN", runner_token(cell, organization, project=3))],
            "token-job": [("JOB-TOKEN", job_token(cell, organization, 1))],
            "token-basic": [("Authorization", basic_authorization("u", personal_access_token(cell, organization, 1)))],
            "token-basic-job": [
                ("Authorization", basic_authorization("gitlab-ci-token", job_token(cell, organization, 1)))
            ],
        }[kind]
    decision = _ROUTER().decide(RequestView.build("/api/v4/projects", headers))
    assert decision is not None and (decision.classify_type, decision.value) == ("CELL_ID", str(cell))


def test_the_run_flag_sets_the_dialect_over_the_environment():
    """``cells-operator run --router-dialect`` wins over ``CELLS_ROUTER_DIALECT``; nothing is process-global."""
    from cells_operator import cli

    args = cli.build_parser().parse_args(["run", "--router-dialect", "2024"])
    assert cli.config_from(args, {DIALECT_ENV: "current"}).router_dialect is Dialect.V2024
    args = cli.build_parser().parse_args(["run"])
    assert cli.config_from(args, {DIALECT_ENV: "2024"}).router_dialect is Dialect.V2024
    assert cli.config_from(args, {}).router_dialect is Dialect.CURRENT
