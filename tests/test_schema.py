"""JSON Schemas derived from the action registry: pinned shapes, narrowing, and what they accept."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, ActionSpec, ArgKind, ArgSpec
from aiplanner.errors import ConfigError
from aiplanner.schema import (
    LEGACY_PLAN_KEY,
    PLAN_KEY,
    choice_schema,
    compact_plan_schema,
    packed_schema,
    verbose_plan_schema,
    with_agent_id,
    with_first_step,
)

INT = {"type": "integer", "minimum": 0, "maximum": 10000}
ID = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}


def step(code: str, *args: dict[str, Any]) -> dict[str, Any]:
    n = 1 + len(args)
    return {"type": "array", "prefixItems": [{"const": code}, *args], "minItems": n, "maxItems": n}


# Pinned on purpose: a change here changes every grammar the engines build. Update it knowingly.
COMPACT_DEFAULT = {
    "type": "object",
    "properties": {
        "plan": {
            "type": "array",
            "minItems": 1,
            "maxItems": 4,
            "items": {
                "anyOf": [
                    step("M", INT, INT),
                    step("A", ID),
                    step("C", INT, INT),
                    step("R"),
                    step("H", ID),
                    step("T", INT, INT),
                    step("S"),
                    step("W", {"type": "integer", "minimum": 1, "maximum": 120}),
                ]
            },
        }
    },
    "required": ["plan"],
    "additionalProperties": False,
}


def validator(schema: dict[str, Any]) -> Any:
    # jsonschema is a dev dependency: only the tests that check instances need it.
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def valid(schema: dict[str, Any], instance: object) -> bool:
    return bool(validator(schema).is_valid(instance))


def walk(node: object) -> list[dict[str, Any]]:
    """Every dict inside a schema, depth first."""
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        out.append(node)
        for v in node.values():
            out += walk(v)
    elif isinstance(node, list):
        for v in node:
            out += walk(v)
    return out


def test_compact_schema_of_default_registry_is_pinned() -> None:
    assert compact_plan_schema(DEFAULT_REGISTRY) == COMPACT_DEFAULT


def test_plan_key_can_be_no_action_code() -> None:
    """The model writes the first code right after the key: a key that is itself a possible code
    (the old ``"s"``, Scan's letter) gets repeated as the first action."""
    assert list(compact_plan_schema(DEFAULT_REGISTRY)["properties"]) == [PLAN_KEY]
    with pytest.raises(ConfigError, match="one letter"):
        ActionRegistry([ActionSpec("Plan", PLAN_KEY, (), "a step named like the key")])
    assert DEFAULT_REGISTRY.by_code(LEGACY_PLAN_KEY.upper()) is not None  # why it was renamed


def test_verbose_schema_of_default_registry_is_pinned() -> None:
    items = verbose_plan_schema(DEFAULT_REGISTRY)["properties"]["steps"]["items"]["anyOf"]
    assert items[0] == {
        "type": "object",
        "properties": {"act": {"const": "MoveTo"}, "x": INT, "y": INT},
        "required": ["act", "x", "y"],
        "additionalProperties": False,
    }
    assert [i["properties"]["act"]["const"] for i in items] == list(DEFAULT_REGISTRY.names)
    assert items[3]["required"] == ["act"]  # Reload takes no arguments


def test_choice_schema_is_pinned() -> None:
    assert choice_schema(3) == {
        "type": "object",
        "properties": {"c": {"enum": [0, 1, 2]}},
        "required": ["c"],
        "additionalProperties": False,
    }


@pytest.mark.parametrize("n", [0, -1])
def test_choice_schema_needs_a_candidate(n: int) -> None:
    with pytest.raises(ConfigError):
        choice_schema(n)


def test_packed_schema_is_pinned_and_ordered() -> None:
    schema = packed_schema({15: choice_schema(2), 12: choice_schema(1)})
    assert schema == {
        "type": "array",
        "prefixItems": [
            {
                "type": "object",
                "properties": {"id": {"const": 15}, "c": {"enum": [0, 1]}},
                "required": ["id", "c"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"id": {"const": 12}, "c": {"enum": [0]}},
                "required": ["id", "c"],
                "additionalProperties": False,
            },
        ],
        "minItems": 2,
        "maxItems": 2,
    }


def test_no_schema_uses_items_false_and_every_object_is_closed() -> None:
    schemas = [
        verbose_plan_schema(DEFAULT_REGISTRY),
        compact_plan_schema(DEFAULT_REGISTRY, ids=[3]),
        packed_schema({1: compact_plan_schema(DEFAULT_REGISTRY), 2: choice_schema(4)}),
    ]
    for schema in schemas:
        for node in walk(schema):
            assert node.get("items") is not False
            if node.get("type") == "object":
                assert node["additionalProperties"] is False
                assert node["required"] == list(node["properties"])
            if "prefixItems" in node:
                assert node["minItems"] == node["maxItems"] == len(node["prefixItems"])


def test_compact_schema_accepts_and_rejects() -> None:
    schema = compact_plan_schema(DEFAULT_REGISTRY)
    assert valid(schema, {"plan": [["M", 3, 4], ["A", 91]]})
    assert valid(schema, {"plan": [["R"], ["S"], ["W", 5], ["H", 2]]})
    assert not valid(schema, {"plan": []})  # empty plan
    assert not valid(schema, {"plan": [["R"]] * 5})  # over max_steps
    assert not valid(schema, {"plan": [["M", 3]]})  # missing argument
    assert not valid(schema, {"plan": [["M", 3, 4, 5]]})  # extra argument
    assert not valid(schema, {"plan": [["X", 1]]})  # unknown code
    assert not valid(schema, {"plan": [["W", 0]]})  # below the declared lo
    assert not valid(schema, {"plan": [["R"]], "why": "x"})  # extra key


def test_ids_narrow_enemy_and_ally_arguments() -> None:
    schema = compact_plan_schema(DEFAULT_REGISTRY, enemy_ids=[92, 91, 91], ally_ids=[12])
    assert valid(schema, {"plan": [["A", 91], ["H", 12]]})
    assert not valid(schema, {"plan": [["A", 12]]})  # an ally is not a target
    assert not valid(schema, {"plan": [["H", 91]]})
    attack = next(a for a in walk(schema) if a.get("prefixItems", [{}])[0] == {"const": "A"})
    assert attack["prefixItems"][1] == {"enum": [91, 92]}  # sorted, deduplicated


def test_ids_applies_to_both_kinds_unless_overridden() -> None:
    schema = compact_plan_schema(DEFAULT_REGISTRY, ids=[7], ally_ids=[8])
    assert valid(schema, {"plan": [["A", 7], ["H", 8]]})
    assert not valid(schema, {"plan": [["H", 7]]})


def test_actions_without_a_possible_target_are_left_out() -> None:
    schema = compact_plan_schema(DEFAULT_REGISTRY, enemy_ids=[], ally_ids=[4])
    codes = [s["prefixItems"][0]["const"] for s in schema["properties"]["plan"]["items"]["anyOf"]]
    assert codes == ["M", "C", "R", "H", "T", "S", "W"]
    assert not valid(schema, {"plan": [["A", 1]]})


def test_ids_outside_the_declared_range_are_not_allowed() -> None:
    schema = compact_plan_schema(DEFAULT_REGISTRY, enemy_ids=[5, 2**31])
    assert not valid(schema, {"plan": [["A", 2**31]]})
    assert valid(schema, {"plan": [["A", 5]]})


def test_size_narrows_cells_to_the_map() -> None:
    schema = compact_plan_schema(DEFAULT_REGISTRY, size=(32, 24))
    assert valid(schema, {"plan": [["M", 31, 23]]})
    assert not valid(schema, {"plan": [["M", 32, 0]]})
    assert not valid(schema, {"plan": [["T", 0, 24]]})


def test_no_possible_action_is_a_config_error() -> None:
    only_attack = ActionRegistry(
        [ActionSpec("Attack", "A", (ArgSpec("target", ArgKind.ENEMY),), "shoot")]
    )
    with pytest.raises(ConfigError):
        compact_plan_schema(only_attack, ids=[])


def test_schema_follows_the_registry() -> None:
    registry = ActionRegistry(
        [
            ActionSpec("Dig", "D", (ArgSpec("depth", ArgKind.COUNT, 2, 9),), "dig a hole"),
            ActionSpec("Hide", "H", (), "hide"),
        ],
        max_steps=2,
    )
    schema = compact_plan_schema(registry)
    assert valid(schema, {"plan": [["D", 9], ["H"]]})
    assert not valid(schema, {"plan": [["D", 10]]})
    assert not valid(schema, {"plan": [["M", 1, 1]]})  # not in this registry
    assert not valid(schema, {"plan": [["H"], ["H"], ["H"]]})  # max_steps=2
    verbose = verbose_plan_schema(registry)
    assert valid(verbose, {"steps": [{"act": "Dig", "depth": 3}]})
    assert not valid(verbose, {"steps": [{"act": "Dig"}]})


def test_packed_schema_checks_ids_order_and_count() -> None:
    schema = packed_schema({12: choice_schema(2), 15: compact_plan_schema(DEFAULT_REGISTRY)})
    assert valid(schema, [{"id": 12, "c": 1}, {"id": 15, "plan": [["R"]]}])
    assert not valid(schema, [{"id": 15, "plan": [["R"]]}, {"id": 12, "c": 1}])  # order
    assert not valid(schema, [{"id": 12, "c": 1}])  # one agent missing
    assert not valid(schema, [{"id": 12, "c": 1}, {"id": 15, "plan": [["R"]]}, {"id": 15, "c": 0}])
    assert not valid(schema, [{"c": 1}, {"id": 15, "plan": [["R"]]}])  # id is required


def test_packed_schema_rejects_bad_elements() -> None:
    with pytest.raises(ConfigError):
        packed_schema({})
    with pytest.raises(ConfigError):
        packed_schema({1: {"anyOf": [choice_schema(1)]}})
    with pytest.raises(ConfigError):
        with_agent_id(1, with_agent_id(2, choice_schema(1)))


def test_llama_cpp_converter_accepts_the_schemas() -> None:
    grammar = pytest.importorskip("llama_cpp.llama_grammar")
    schema = packed_schema(
        {
            12: compact_plan_schema(DEFAULT_REGISTRY, enemy_ids=[91], ally_ids=[12], size=(8, 8)),
            15: choice_schema(3),
        }
    )
    gbnf = grammar.json_schema_to_gbnf(json.dumps(schema))
    assert '"\\"M\\""' in gbnf and '"91"' in gbnf and '"12"' in gbnf


# Pinned on purpose: what the grammar of a free-mode agent looks like with 3 named places (one of
# them, index 1, a cover point), enemies 91 and 92, and one hurt ally 15. A place is one index.
COMPACT_PLACES = {
    "type": "object",
    "properties": {
        "plan": {
            "type": "array",
            "minItems": 1,
            "maxItems": 4,
            "items": {
                "anyOf": [
                    step("M", {"enum": [0, 1, 2]}),
                    step("A", {"enum": [91, 92]}),
                    step("C", {"enum": [0, 1, 2]}),
                    step("R"),
                    step("H", {"enum": [15]}),
                    step("T", {"enum": [0, 1, 2]}),
                    step("S"),
                    step("W", {"type": "integer", "minimum": 1, "maximum": 120}),
                ]
            },
        }
    },
    "required": ["plan"],
    "additionalProperties": False,
}


def test_compact_schema_with_named_places_is_pinned() -> None:
    schema = compact_plan_schema(
        DEFAULT_REGISTRY, enemy_ids=[92, 91], ally_ids=[15], places=3, cover_places=[1]
    )
    assert schema == COMPACT_PLACES
    assert valid(schema, {"plan": [["C", 1], ["A", 92]]})
    assert not valid(schema, {"plan": [["M", 3]]})  # only 3 places
    assert not valid(schema, {"plan": [["M", 3, 4]]})  # a cell is not a place
    assert not valid(schema, {"plan": [["A", 93]]})


def test_with_no_place_the_moves_are_left_out() -> None:
    schema = compact_plan_schema(DEFAULT_REGISTRY, enemy_ids=[91], ally_ids=[], places=0)
    codes = [s["prefixItems"][0]["const"] for s in schema["properties"]["plan"]["items"]["anyOf"]]
    assert codes == ["A", "R", "S", "W"]


PLACE_REGISTRY = ActionRegistry(
    [
        ActionSpec("Go", "G", (ArgSpec("to", ArgKind.PLACE),), "go to a place"),
        ActionSpec(
            "Hide", "H", (ArgSpec("at", ArgKind.COVER), ArgSpec("n", ArgKind.COUNT, 1, 9)), "hide"
        ),
        ActionSpec("Rest", "R", (), "rest"),
    ]
)


def test_place_and_cover_kinds_are_one_index_each() -> None:
    schema = compact_plan_schema(PLACE_REGISTRY, places=4, cover_places=[3, 0, 7])
    assert valid(schema, {"plan": [["G", 2], ["H", 3, 5]]})
    assert not valid(schema, {"plan": [["H", 2, 5]]})  # place 2 is not cover
    assert not valid(schema, {"plan": [["H", 7, 5]]})  # there is no place 7
    no_cover = compact_plan_schema(PLACE_REGISTRY, places=4)
    codes = [s["prefixItems"][0]["const"] for s in no_cover["properties"]["plan"]["items"]["anyOf"]]
    assert codes == ["G", "R"]


def test_place_and_cover_kinds_without_places_are_cells() -> None:
    schema = compact_plan_schema(PLACE_REGISTRY, size=(10, 8))
    assert valid(schema, {"plan": [["G", 9, 7], ["H", 0, 0, 1]]})
    assert not valid(schema, {"plan": [["G", 10, 7]]})
    assert not valid(schema, {"plan": [["G", 3]]})
    verbose = verbose_plan_schema(PLACE_REGISTRY)
    assert valid(verbose, {"steps": [{"act": "Go", "to": 5 * 65536 + 3}]})


def test_place_schemas_pass_llama_cpp_converter() -> None:
    grammar = pytest.importorskip("llama_cpp.llama_grammar")
    for schema in (COMPACT_PLACES, compact_plan_schema(PLACE_REGISTRY, places=2, cover_places=[1])):
        assert grammar.json_schema_to_gbnf(json.dumps(schema))


def test_with_first_step_fixes_the_first_step_and_leaves_the_rest_free() -> None:
    base = compact_plan_schema(DEFAULT_REGISTRY, enemy_ids=[91, 7], ally_ids=[], places=3)
    attack = DEFAULT_REGISTRY.spec("Attack")
    schema = with_first_step(base, attack, [7])
    assert valid(schema, {"plan": [["A", 7]]})
    assert valid(schema, {"plan": [["A", 7], ["M", 2], ["S"]]})
    assert not valid(schema, {"plan": [["A", 91]]})  # another target
    assert not valid(schema, {"plan": [["S"], ["A", 7]]})  # not first
    assert not valid(schema, {"plan": [["A", 7], ["A", 5]]})  # the rest as narrow as before
    assert not valid(schema, {"plan": [["A", 7]] * (DEFAULT_REGISTRY.max_steps + 1)})
    move = with_first_step(base, DEFAULT_REGISTRY.spec("MoveTo"), [2])
    assert valid(move, {"plan": [["M", 2]]}) and not valid(move, {"plan": [["M", 1]]})
    assert valid(with_first_step(base, DEFAULT_REGISTRY.spec("Scan"), []), {"plan": [["S"]]})


@pytest.mark.parametrize(
    ("action", "values"),
    [
        ("Attack", [5]),
        ("MoveTo", [3]),
        ("Heal", [1]),
        ("Wait", [0]),
        ("Wait", [5, 6]),
        ("Scan", [1]),
    ],
)
def test_with_first_step_refuses_a_step_the_schema_does_not_allow(
    action: str, values: list[int]
) -> None:
    base = compact_plan_schema(DEFAULT_REGISTRY, enemy_ids=[91, 7], ally_ids=[], places=3)
    with pytest.raises(ConfigError):
        with_first_step(base, DEFAULT_REGISTRY.spec(action), values)
    with pytest.raises(ConfigError):
        with_first_step(choice_schema(2), DEFAULT_REGISTRY.spec("Scan"), [])
