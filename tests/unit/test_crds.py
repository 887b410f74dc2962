"""The CRDs in ``crds/`` are generated from the pydantic models (issue 12, ADR 0017): one schema, no drift.

The integration tests (tests/integration/test_cel.py, test_admission.py) prove on the real API server
that the generated files accept and refuse what the hand-written ones did; these prove the files are
the generator's output, and that the generator produces what a structural schema allows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from cells_operator import crd_schema
from cells_operator.cell import ADDRESS_PATTERN, DNS_LABEL, CellSpec
from cells_operator.cli import main
from cells_operator.rule import RoutingRuleSpec

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "title", "additionalProperties"}


def openapi(info: crd_schema.CrdInfo) -> dict[str, Any]:
    return crd_schema.crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def nodes(schema: dict[str, Any], path: str = ""):
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from nodes(child, f"{path}.{name}")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")


@pytest.mark.parametrize("info", crd_schema.ALL, ids=lambda i: i.kind)
def test_the_shipped_crd_is_what_the_models_generate(info):
    """crds/*.yaml are generated: regenerate them, never edit them by hand."""
    shipped = (ROOT / "crds" / crd_schema.filename(info)).read_text()
    assert shipped == crd_schema.crd_yaml(info), "run: cells-operator manifests crds --out-dir crds"


@pytest.mark.parametrize("info", crd_schema.ALL, ids=lambda i: i.kind)
def test_the_schema_is_structural(info):
    """Every node has one type and no construct a structural schema forbids (the API server refuses them)."""
    for path, node in nodes(openapi(info)):
        assert not FORBIDDEN & node.keys(), path
        assert node.get("type") in {"object", "array", "string", "integer", "boolean"}, path
        if node["type"] == "integer":
            assert node["format"] == "int64", path


def test_the_address_and_session_prefix_checks_have_one_definition():
    """The API server's patterns are the code's own constants, not copies of them."""
    spec = openapi(crd_schema.CELL)["properties"]["spec"]["properties"]
    assert spec["address"]["pattern"] == ADDRESS_PATTERN
    assert spec["sessionPrefix"]["pattern"] == DNS_LABEL.pattern


def apply_defaults(schema: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """Defaulting as the API server does it for the fields present: missing fields with a default get it."""
    out = dict(obj)
    for name, child in (schema.get("properties") or {}).items():
        if name not in out and "default" in child:
            out[name] = child["default"]
        elif isinstance(out.get(name), dict):
            out[name] = apply_defaults(child, out[name])
    return out


@pytest.mark.parametrize(
    ("info", "model", "minimal"),
    [
        (crd_schema.CELL, CellSpec, {"id": 3, "address": "cell-3.example"}),
        (crd_schema.ROUTING_RULE, RoutingRuleSpec, {"ruleset": "r", "action": "proxy"}),
    ],
    ids=["Cell", "RoutingRule"],
)
def test_the_api_servers_defaults_are_the_models(info, model, minimal):
    """A spec defaulted by the API server parses to the same model as the bare spec: one set of defaults."""
    defaulted = apply_defaults(openapi(info)["properties"]["spec"], minimal)
    assert defaulted != minimal  # the schema does default something
    assert model.model_validate(defaulted) == model.model_validate(minimal)


def test_every_spec_field_is_described_for_kubectl_explain():
    for info in crd_schema.ALL:
        for path, node in nodes(openapi(info)["properties"]["spec"]):
            if not path.endswith("[]"):  # an array's items are described by the array
                assert node.get("description"), f"{info.kind}.spec{path} has no description"


def test_optional_fields_are_omittable_not_nullable_unless_they_say_so():
    class Example(BaseModel):
        omittable: int | None = None
        nullable: str | None = Field(None, json_schema_extra={"nullable": True})
        big: int = Field(0, le=2**63 - 1)

    schema = crd_schema.structural(Example)
    assert schema["properties"]["omittable"] == {"type": "integer", "format": "int64"}
    assert schema["properties"]["nullable"] == {"type": "string", "nullable": True}
    # int64's own bound is the format's; zero is a real default and stays.
    assert schema["properties"]["big"] == {"type": "integer", "format": "int64", "default": 0}


def test_a_field_of_two_types_cannot_become_a_structural_schema():
    class Example(BaseModel):
        either: int | str

    with pytest.raises(ValueError, match="one type per field"):
        crd_schema.structural(Example)


def test_extras_merge_at_a_path_and_into_array_items():
    class Inner(BaseModel):
        a: int

    class Outer(BaseModel):
        inner: Inner
        many: tuple[Inner, ...] = ()

    schema = crd_schema.structural(
        Outer, {"inner.a": {"minimum": 2}, "many[]": {"x-kubernetes-validations": [{"rule": "true"}]}}
    )
    assert schema["properties"]["inner"]["properties"]["a"]["minimum"] == 2
    assert schema["properties"]["many"]["items"]["x-kubernetes-validations"] == [{"rule": "true"}]


def test_what_the_model_says_wins_over_an_extra():
    """Extras only fill in: once a model's field carries its own description, the extra's is moot."""

    class Example(BaseModel):
        a: int = Field(description="from the model")

    schema = crd_schema.structural(Example, {"a": {"description": "from the extras", "minimum": 2}})
    assert schema["properties"]["a"]["description"] == "from the model"
    assert schema["properties"]["a"]["minimum"] == 2


def test_manifests_crds_prints_every_crd(capsys):
    assert main(["manifests", "crds"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["spec"]["names"]["kind"] for d in docs] == ["Cell", "RoutingRule"]


def test_manifests_crds_writes_the_files(tmp_path, capsys):
    assert main(["manifests", "crds", "--out-dir", str(tmp_path)]) == 0
    for info in crd_schema.ALL:
        assert (tmp_path / crd_schema.filename(info)).read_text() == crd_schema.crd_yaml(info)
