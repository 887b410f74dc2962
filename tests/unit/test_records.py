import json
import tomllib

import pytest

from cells_formats.fields import CellState, SequenceRange
from cells_formats.records import (
    CellRecord,
    RecordsError,
    RetiredRange,
    Topology,
    parse_topology_json,
    render_config_toml,
    render_records,
    render_topology_json,
)


def record(name, id_, state=CellState.ACTIVE, first=False, ranges=((1, 10),)):
    return CellRecord(
        name=name,
        uid=f"uid-{name}",
        id=id_,
        address=f"{name}.example:8080",
        session_prefix=f"cell-{id_}",
        state=state,
        first_cell=first,
        sequence_ranges=tuple(SequenceRange(minval=a, maxval=b) for a, b in ranges),
    )


TOPO = Topology(
    revision=7,
    cells=(
        record("b", 2, ranges=((11, 20), (31, 40))),
        record("a", 1, first=True),
        record("c", 3, state=CellState.OFFLINE, ranges=((21, 30),)),
    ),
    retired_ranges=(RetiredRange(minval=41, maxval=50, cell_id=4, cell_name="d"),),
)


def test_config_toml_lists_every_registered_cell_whatever_its_state_sorted_by_id():
    # ADR 0010: an Offline cell keeps its id and ranges in the authoritative record.
    doc = tomllib.loads(render_config_toml(TOPO))
    assert [c["id"] for c in doc["cells"]] == [1, 2, 3]
    b = doc["cells"][1]
    assert b == {
        "id": 2,
        "address": "b.example:8080",
        "session_prefix": "cell-2",
        "sequence_ranges": [{"minval": 11, "maxval": 20}, {"minval": 31, "maxval": 40}],
    }
    assert doc["cells"][2]["sequence_ranges"] == [{"minval": 21, "maxval": 30}]


def test_skip_range_validation_is_rendered_inside_each_range_table_of_that_cell():
    short_lived = record("t", 5, ranges=((51, 60), (61, 70))).model_copy(update={"skip_range_validation": True})
    text = render_config_toml(Topology(cells=(record("a", 1), short_lived)))
    doc = tomllib.loads(text)
    assert doc["cells"][0]["sequence_ranges"] == [{"minval": 1, "maxval": 10}]  # absent where not set
    assert doc["cells"][1]["sequence_ranges"] == [
        {"minval": 51, "maxval": 60, "skip_range_validation": True},
        {"minval": 61, "maxval": 70, "skip_range_validation": True},
    ]
    assert "skip_range_validation" not in doc["cells"][1]  # not on the cell table: the range table is read
    # Exactly where the real format has it: the line right after the range's bounds.
    assert "[[cells.sequence_ranges]]\nminval = 51\nmaxval = 60\nskip_range_validation = true\n" in text


def test_config_toml_escapes_strings():
    weird = Topology(cells=(record("x", 9).model_copy(update={"address": 'we"ird\\host:1'}),))
    assert tomllib.loads(render_config_toml(weird))["cells"][0]["address"] == 'we"ird\\host:1'


def test_topology_json_has_state_first_cell_retired_and_revision():
    doc = json.loads(render_topology_json(TOPO))
    assert doc["revision"] == 7
    assert doc["first_cell_id"] == 1
    assert [c["name"] for c in doc["cells"]] == ["b", "a", "c"]  # registration order kept
    assert doc["cells"][2]["state"] == "Offline"
    assert doc["retired_ranges"] == [{"minval": 41, "maxval": 50, "cell_id": 4, "cell_name": "d"}]


def test_rendering_is_deterministic_and_round_trips():
    assert render_records(TOPO) == render_records(TOPO.model_copy())
    assert parse_topology_json(render_topology_json(TOPO)) == TOPO


def test_empty_topology():
    assert tomllib.loads(render_config_toml(Topology())) == {}
    assert parse_topology_json(render_topology_json(Topology())) == Topology()


@pytest.mark.parametrize("text", ["", "[]", "{not json", '{"cells": [{"name": 1}]}', '{"schema_version": 99}'])
def test_unreadable_records_raise(text):
    with pytest.raises(RecordsError):
        parse_topology_json(text)
