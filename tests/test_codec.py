"""PlanCodec: decoding untrusted model text into plans, encoding answers, schemas and budgets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiplanner.actions import (
    DEFAULT_REGISTRY,
    ActionRegistry,
    ActionSpec,
    ArgKind,
    ArgSpec,
    Plan,
    Step,
)
from aiplanner.codec import MAX_TEXT_CHARS, ElementError, PlanCodec, extract_json, json_values
from aiplanner.components import Battlefield
from aiplanner.errors import ConfigError, ParseError, PlanRejected
from aiplanner.places import free_options, pack_cell
from aiplanner.requests import PlanRequest
from aiplanner.snapshot import SeenUnit, SelfView, WorldSnapshot

FIELD = Battlefield(32, 24, frozenset({(6, 7)}), ((6, 8),), (20, 20))
CANDIDATES = (
    Plan((Step("Attack", (91,)),)),
    Plan((Step("TakeCover", (6, 8)), Step("Attack", (91,)))),
    Plan((Step("Reload"),)),
)


def make_req(entity: int = 12, candidates: tuple[Plan, ...] = CANDIDATES) -> PlanRequest:
    snap = WorldSnapshot(
        tick=10,
        me=SelfView(entity, "tactical", 0, 5, 7, 80, 100, 2, 6, False, 6.0),
        enemies=(SeenUnit(91, 9, 7, 60, False, 4.0), SeenUnit(92, 12, 3, 100, True, 8.1)),
        allies=(SeenUnit(15, 4, 7, 30, False, 1.0),),
        cover=FIELD.cover,
        obstacles=((6, 7),),
        objective=FIELD.objective,
        field=FIELD,
    )
    return PlanRequest(
        entity=entity,
        plan_id=1,
        snapshot=snap,
        candidates=candidates,
        requested_tick=0,
        requested_at=0.0,
        deadline=5.0,
        budget_s=5.0,
    )


REQ = make_req()
GUIDED = PlanCodec(DEFAULT_REGISTRY, mode="guided")
FREE = PlanCodec(DEFAULT_REGISTRY, mode="free")


def rejected(codec: PlanCodec, text: str) -> PlanRejected:
    with pytest.raises(PlanRejected) as info:
        codec.decode(text, REQ)
    assert info.value.raw == text
    return info.value


# -- guided --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ('{"c":1}', 1),
        ('{ "c" : 2 }', 2),
        ('```json\n{"c":0}\n```', 0),
        ('Sure! The best option is {"c": 2} because it reloads.', 2),
        ('{"c":1,"why":"cover first"}', 1),  # extra top-level keys are ignored
        ("2", 2),  # a bare index, as a model without a grammar may answer
        ("```\n1\n```", 1),
    ],
)
def test_guided_decode_returns_the_chosen_candidate(text: str, index: int) -> None:
    assert GUIDED.decode(text, REQ) is CANDIDATES[index]


@pytest.mark.parametrize("text", ['{"c":3}', '{"c":-1}', '{"c":true}', '{"c":"1"}', '{"c":1.0}'])
def test_guided_bad_choice(text: str) -> None:
    assert rejected(GUIDED, text).reason == "bad_choice"


def test_guided_with_no_candidates_rejects_every_choice() -> None:
    with pytest.raises(PlanRejected) as info:
        GUIDED.decode('{"c":0}', make_req(candidates=()))
    assert info.value.reason == "bad_choice"


@pytest.mark.parametrize(
    "text",
    ["", "I think option two.", '{"choice":1}', '{"c":1', '{"c":}', "[1]", "12345"],
)
def test_guided_unparsable_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError) as info:
        GUIDED.decode(text, REQ)
    assert info.value.raw == text[:2000]


# -- free ----------------------------------------------------------------------------------------

TWO_STEPS = Plan((Step("MoveTo", (3, 4)), Step("Attack", (91,))))


@pytest.mark.parametrize(
    "text",
    [
        '{"plan":[["M",3,4],["A",91]]}',
        '```json\n{"plan": [["M", 3, 4], ["A", 91]]}\n```\nThis moves then shoots.',
        'Here {"plan":[["M",3,4],["A",91]],"note":"a } or ] inside \\" a string"} done',
        '{"steps":[{"act":"MoveTo","x":3,"y":4},{"act":"Attack","target_id":91}]}',
        '{"plan_id":"p1","steps":[{"act":"MoveTo","y":4,"x":3},{"act":"Attack","target_id":91}]}',
        '{"plan":[["MoveTo",3,4],["Attack",91]]}',  # full names for codes are tolerated
    ],
)
def test_free_decode_compact_and_verbose(text: str) -> None:
    assert FREE.decode(text, REQ) == TWO_STEPS


def test_free_decode_accepts_the_old_compact_key() -> None:
    """Answers written before the key was renamed still decode; the new key wins when both are
    there, and the error for neither names the new one."""
    assert FREE.decode('{"s":[["M",3,4],["A",91]]}', REQ) == TWO_STEPS
    assert FREE.decode_element({"id": 12, "s": [["M", 3, 4], ["A", 91]]}, BY_ID) == (12, TWO_STEPS)
    assert FREE.decode('{"plan":[["R"]],"s":[["S"]]}', REQ) == Plan((Step("Reload"),))
    with pytest.raises(ParseError, match='"plan"'):
        FREE.decode('{"p":[["R"]]}', REQ)


def test_free_decode_argless_and_bounded_steps() -> None:
    plan = FREE.decode('{"plan":[["R"],["S"],["W",120],["H",12]]}', REQ)
    assert plan == Plan((Step("Reload"), Step("Scan"), Step("Wait", (120,)), Step("Heal", (12,))))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"plan":[["X",1]]}', "unknown_action"),
        ('{"plan":[["Fly",1]]}', "unknown_action"),
        ('{"plan":[[7,1]]}', "unknown_action"),
        ('{"plan":[["m",3,4]]}', "unknown_action"),  # codes are case-sensitive
        ('{"steps":[{"act":"Teleport"}]}', "unknown_action"),
        ('{"plan":[["M",9]]}', "bad_place"),  # one integer: a place index, and there is no 9
        ('{"plan":[["M",-1]]}', "bad_place"),
        ('{"plan":[["M","0"]]}', "bad_place"),
        ('{"plan":[["M",true]]}', "bad_place"),
        ('{"plan":[["M",3,4,5]]}', "bad_arguments"),
        ('{"plan":[["R",1]]}', "bad_arguments"),
        ('{"plan":[["M","3",4]]}', "bad_arguments"),
        ('{"plan":[["M",3.0,4]]}', "bad_arguments"),
        ('{"plan":[["M",true,4]]}', "bad_arguments"),
        ('{"plan":[["M",null,4]]}', "bad_arguments"),
        ('{"plan":[["M",-1,4]]}', "bad_arguments"),
        ('{"plan":[["W",0]]}', "bad_arguments"),
        ('{"plan":[["W",121]]}', "bad_arguments"),
        ('{"plan":[["A",123456789012345678901234567890]]}', "bad_arguments"),
        ('{"steps":[{"act":"MoveTo","x":3}]}', "bad_arguments"),
        ('{"steps":[{"act":"MoveTo","x":3,"y":4,"z":5}]}', "bad_arguments"),
        ('{"plan":[["R"],["R"],["R"],["R"],["R"]]}', "too_many_steps"),
        ('{"plan":[]}', "empty_plan"),
        ('{"steps":[]}', "empty_plan"),
    ],
)
def test_free_rejections(text: str, reason: str) -> None:
    err = rejected(FREE, text)
    assert err.reason == reason
    assert err.detail


@pytest.mark.parametrize(
    "text",
    [
        '{"c":1}',  # a guided answer in free mode
        '{"plan":"M3,4"}',
        '{"plan":[{"act":"MoveTo","x":1,"y":2}]}',  # verbose steps under the compact key
        '{"steps":[["M",1,2]]}',
        '{"plan":[[]]}',
        '["M",3,4]',
        '{"plan":[["M",3,4]]',
        "no json here",
        '{"plan":[["M",3,4]],"x":NaN}',
    ],
)
def test_free_shape_errors_are_parse_errors(text: str) -> None:
    with pytest.raises(ParseError):
        FREE.decode(text, REQ)


def test_json_values_finds_every_value_nested_ones_too() -> None:
    text = 'e.g. {"plan":[["M",6,8],["A",91]]} or [1, {"c":2}] but not {broken or ["open"'
    assert json_values(text) == [
        {"plan": [["M", 6, 8], ["A", 91]]},
        [["M", 6, 8], ["A", 91]],
        ["M", 6, 8],
        ["A", 91],
        [1, {"c": 2}],
        {"c": 2},
    ]
    assert json_values("no brackets") == []
    with pytest.raises(ParseError):
        json_values("[" * (MAX_TEXT_CHARS + 1))


def test_oversized_text_is_refused_before_parsing() -> None:
    text = '{"c":1}' + " " * MAX_TEXT_CHARS
    with pytest.raises(ParseError, match="exceeds"):
        GUIDED.decode(text, REQ)


def test_extract_json_skips_prose_and_brackets_in_strings() -> None:
    assert extract_json('ok: {"a":"}]\\"{"} trailing }') == '{"a":"}]\\"{"}'
    assert extract_json("x [1,[2]] y") == "[1,[2]]"
    with pytest.raises(ParseError):
        extract_json('{"a":"never closed}')
    with pytest.raises(ParseError):
        extract_json("nothing")


# -- packed elements -----------------------------------------------------------------------------

BY_ID = {12: make_req(12), 15: make_req(15)}


def test_decode_element_guided_and_free() -> None:
    assert GUIDED.decode_element({"id": 15, "c": 2}, BY_ID) == (15, CANDIDATES[2])
    assert FREE.decode_element({"id": 12, "plan": [["M", 3, 4], ["A", 91]]}, BY_ID) == (
        12,
        TWO_STEPS,
    )


@pytest.mark.parametrize(
    ("value", "reason", "entity"),
    [
        ([12, 0], "bad_element", None),
        ("12", "bad_element", None),
        ({"c": 0}, "missing_id", None),
        ({"id": "12", "c": 0}, "missing_id", None),
        ({"id": True, "c": 0}, "missing_id", None),
        ({"id": 99, "c": 0}, "unknown_id", 99),
        ({"id": 12, "c": 7}, "bad_choice", 12),
        ({"id": 15, "choice": 0}, "bad_shape", 15),
    ],
)
def test_decode_element_errors(value: object, reason: str, entity: int | None) -> None:
    with pytest.raises(ElementError) as info:
        GUIDED.decode_element(value, BY_ID)
    assert isinstance(info.value, PlanRejected)
    assert (info.value.reason, info.value.entity) == (reason, entity)
    assert info.value.raw  # the element, for debugging


def test_decode_element_free_rejections_keep_reason_and_id() -> None:
    with pytest.raises(ElementError) as info:
        FREE.decode_element({"id": 15, "plan": [["Q", 1]]}, BY_ID)
    assert (info.value.reason, info.value.entity) == ("unknown_action", 15)
    assert info.value.raw == '{"id":15,"plan":[["Q",1]]}'
    assert isinstance(info.value.__cause__, PlanRejected)


# -- encoding ------------------------------------------------------------------------------------


def test_encode_forms() -> None:
    assert FREE.encode(TWO_STEPS) == '{"plan":[["M",3,4],["A",91]]}'
    assert GUIDED.encode_choice(1) == '{"c":1}'
    assert GUIDED.encode_element(12, 0) == '{"id":12,"c":0}'
    assert FREE.encode_element(12, Plan((Step("Reload"),))) == '{"id":12,"plan":[["R"]]}'


def test_encode_refuses_plans_the_registry_cannot_express() -> None:
    with pytest.raises(ConfigError):
        FREE.encode(Plan((Step("Fly", (1,)),)))
    with pytest.raises(ConfigError):
        FREE.encode(Plan((Step("MoveTo", (1,)),)))


@st.composite
def plans(draw: st.DrawFn, registry: ActionRegistry = DEFAULT_REGISTRY) -> Plan:
    specs = draw(
        st.lists(st.sampled_from(registry.actions), min_size=1, max_size=registry.max_steps)
    )
    return Plan(
        tuple(Step(s.name, tuple(draw(st.integers(a.lo, a.hi)) for a in s.args)) for s in specs)
    )


@given(plans(), st.integers(0, 10**6))
def test_encode_decode_round_trip(plan: Plan, entity: int) -> None:
    assert FREE.decode(FREE.encode(plan), REQ) == plan
    element = orjson.loads(FREE.encode_element(entity, plan))
    assert FREE.decode_element(element, {entity: REQ}) == (entity, plan)


def test_round_trip_with_a_custom_registry() -> None:
    registry = ActionRegistry(
        [ActionSpec("Dig", "D", (ArgSpec("depth", ArgKind.COUNT, 2, 9),), "dig")], max_steps=1
    )
    codec = PlanCodec(registry, mode="free")
    plan = Plan((Step("Dig", (4,)),))
    assert codec.encode(plan) == '{"plan":[["D",4]]}'
    assert codec.decode(codec.encode(plan), REQ) == plan
    with pytest.raises(PlanRejected) as info:
        codec.decode('{"plan":[["M",1,2]]}', REQ)  # the default registry's move is unknown here
    assert info.value.reason == "unknown_action"


# -- schemas and budgets -------------------------------------------------------------------------


def test_schema_guided_is_a_choice_over_the_candidates() -> None:
    schema = GUIDED.schema(REQ)
    assert schema["properties"] == {"c": {"enum": [0, 1, 2]}}
    with pytest.raises(ConfigError):
        GUIDED.schema(make_req(candidates=()))


def test_schema_free_is_narrowed_to_the_snapshot() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    v = jsonschema.Draft202012Validator(FREE.schema(REQ))
    n = len(free_options(REQ.snapshot).places)
    assert v.is_valid({"plan": [["A", 92], ["H", 15], ["H", 12], ["M", n - 1]]})
    assert not v.is_valid({"plan": [["A", 15]]})  # an ally, not an enemy
    assert not v.is_valid({"plan": [["H", 91]]})
    assert not v.is_valid({"plan": [["M", n]]})  # no such place
    assert not v.is_valid({"plan": [["M", 6, 8]]})  # cells are not written in free mode


def test_packed_schema_follows_request_order_and_refuses_duplicates() -> None:
    reqs = [make_req(15), make_req(12)]
    schema = GUIDED.packed_schema(reqs)
    assert [i["properties"]["id"] for i in schema["prefixItems"]] == [{"const": 15}, {"const": 12}]
    with pytest.raises(ConfigError):
        GUIDED.packed_schema([make_req(12), make_req(12)])


def test_encoded_answers_satisfy_the_schemas() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    reqs = [make_req(12), make_req(15)]

    def ok(schema: dict[str, Any], text: str) -> bool:
        return bool(jsonschema.Draft202012Validator(schema).is_valid(orjson.loads(text)))

    assert ok(GUIDED.schema(REQ), GUIDED.encode_choice(2))
    assert ok(FREE.schema(REQ), FREE.encode(CANDIDATES[1], REQ))
    packed = "[" + ",".join(GUIDED.encode_element(r.entity, 1) for r in reqs) + "]"
    assert ok(GUIDED.packed_schema(reqs), packed)
    packed = "[" + ",".join(FREE.encode_element(r.entity, CANDIDATES[1], r) for r in reqs) + "]"
    assert ok(FREE.packed_schema(reqs), packed)


@pytest.mark.parametrize("n", [1, 2, 8, 32])
def test_max_tokens_covers_the_longest_valid_answer(n: int) -> None:
    # Each token of this ASCII output is at least one character, so characters bound tokens.
    widest = Plan(tuple(Step("MoveTo", (10_000, 10_000)) for _ in range(4)))
    big_id = 10**10 - 1
    if n == 1:  # a single answer, or a packed array of one
        assert len(FREE.encode(widest)) <= FREE.max_tokens(1)
        assert len(GUIDED.encode_choice(8)) <= GUIDED.max_tokens(1)
    free = "[" + ",".join([FREE.encode_element(big_id, widest)] * n) + "]"
    guided = "[" + ",".join([GUIDED.encode_element(big_id, 8)] * n) + "]"
    assert len(free) <= FREE.max_tokens(n)
    assert len(guided) <= GUIDED.max_tokens(n)
    # ...and is not absurd: a guided answer needs a handful of tokens per agent.
    assert GUIDED.max_tokens(n) <= 40 * n


def test_max_tokens_needs_an_agent() -> None:
    with pytest.raises(ConfigError):
        GUIDED.max_tokens(0)


def test_unknown_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        PlanCodec(mode="creative")


# -- named places ----------------------------------------------------------------------------


def test_a_place_index_decodes_to_its_cell() -> None:
    places = free_options(REQ.snapshot).places
    assert places[0].cell == (6, 8) and places[0].name == "cover"
    for i, p in enumerate(places):
        plan = FREE.decode(f'{{"plan":[["M",{i}],["T",{i}],["A",91]]}}', REQ)
        assert plan == Plan(
            (Step("MoveTo", p.cell), Step("Retreat", p.cell), Step("Attack", (91,)))
        )


def test_encode_with_the_request_names_places_by_index() -> None:
    plan = Plan((Step("TakeCover", (6, 8)), Step("Attack", (91,))))
    assert FREE.encode(plan, REQ) == '{"plan":[["C",0],["A",91]]}'
    assert FREE.encode(plan) == '{"plan":[["C",6,8],["A",91]]}'
    unnamed = Plan((Step("MoveTo", (30, 1)),))  # not a named place: spelt as a cell
    assert FREE.encode(unnamed, REQ) == '{"plan":[["M",30,1]]}'
    assert FREE.decode(FREE.encode(unnamed, REQ), REQ) == unnamed


PLACE_REGISTRY = ActionRegistry(
    [
        ActionSpec("Go", "G", (ArgSpec("to", ArgKind.PLACE),), "go"),
        ActionSpec(
            "Hide", "H", (ArgSpec("at", ArgKind.COVER), ArgSpec("n", ArgKind.COUNT, 1, 9)), "hide"
        ),
    ]
)
PLACES_FREE = PlanCodec(PLACE_REGISTRY, mode="free")


def test_place_and_cover_kinds_decode_to_packed_cells() -> None:
    places = free_options(REQ.snapshot).places
    assert PLACES_FREE.decode('{"plan":[["G",1],["H",0,3]]}', REQ) == Plan(
        (Step("Go", (pack_cell(*places[1].cell),)), Step("Hide", (pack_cell(6, 8), 3)))
    )
    # Spelt as cells: x, y for each place argument.
    assert PLACES_FREE.decode('{"plan":[["G",4,5],["H",6,8,3]]}', REQ) == Plan(
        (Step("Go", (pack_cell(4, 5),)), Step("Hide", (pack_cell(6, 8), 3)))
    )
    err = rejected(PLACES_FREE, '{"plan":[["H",1,3]]}')  # place 1 is not a cover point
    assert err.reason == "bad_place"
    err = rejected(PLACES_FREE, '{"plan":[["G",-4,5]]}')
    assert err.reason == "bad_arguments"


@given(st.integers(0, 31), st.integers(0, 23), st.integers(1, 9))
def test_place_kinds_round_trip(x: int, y: int, n: int) -> None:
    plan = Plan((Step("Go", (pack_cell(x, y),)), Step("Hide", (pack_cell(6, 8), n))))
    assert PLACES_FREE.encode(plan) == f'{{"plan":[["G",{x},{y}],["H",6,8,{n}]]}}'
    for req in (None, REQ):
        assert PLACES_FREE.decode(PLACES_FREE.encode(plan, req), REQ) == plan


def test_place_kinds_fit_the_token_budget() -> None:
    widest = Plan(tuple(Step("Hide", (pack_cell(65535, 65535), 9)) for _ in range(4)))
    assert len(PLACES_FREE.encode(widest)) <= PLACES_FREE.max_tokens(1)
