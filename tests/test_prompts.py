"""PromptBuilder: a shared system prefix, role-first user messages, compact snapshots, docs."""

from __future__ import annotations

import dataclasses
import re

import orjson
import pytest

from aiplanner.actions import (
    DEFAULT_REGISTRY,
    ActionRegistry,
    ActionSpec,
    ArgKind,
    ArgSpec,
    Plan,
    Step,
)
from aiplanner.codec import PlanCodec, json_values
from aiplanner.components import ROLES, Battlefield
from aiplanner.errors import ConfigError, ParseError, PlanRejected
from aiplanner.places import free_options
from aiplanner.prompts import ROLE_INSTRUCTIONS, PromptBuilder
from aiplanner.requests import PlanRequest
from aiplanner.schema import LEGACY_PLAN_KEY, PLAN_KEY
from aiplanner.snapshot import SeenUnit, SelfView, WorldSnapshot

FIELD = Battlefield(32, 24, frozenset({(6, 7), (6, 6)}), ((6, 8), (3, 2)), (20, 20))
TIERS_MODES = [(t, m) for t in ("compressed", "full") for m in ("guided", "free")]


def unit(uid: int, d: float) -> SeenUnit:
    return SeenUnit(uid, uid % 30, 7, 60, uid % 2 == 0, d)


def make_req(
    entity: int = 12,
    role: str = "tactical",
    enemies: tuple[SeenUnit, ...] = (unit(91, 4.0), unit(92, 8.1)),
    candidates: tuple[Plan, ...] = (
        Plan((Step("MoveTo", (3, 4)), Step("Attack", (91,)))),
        Plan((Step("TakeCover", (5, 6)),)),
    ),
) -> PlanRequest:
    snap = WorldSnapshot(
        tick=7,
        me=SelfView(entity, role, 0, 5, 7, 80, 100, 2, 6, True, 6.0),
        enemies=enemies,
        allies=(unit(15, 1.0),),
        cover=FIELD.cover,
        obstacles=((6, 7), (6, 6)),
        objective=FIELD.objective,
        field=FIELD,
    )
    return PlanRequest(entity, 1, snap, candidates, 0, 0.0, 5.0, 5.0)


VARIED = [
    make_req(12, "tactical"),
    make_req(15, "stealth", enemies=()),
    make_req(33, "support", candidates=(Plan((Step("Reload"),)),)),
    make_req(40, "exploration", enemies=tuple(unit(100 + i, i + 1.5) for i in range(7))),
    make_req(41, "a_custom_role"),
]


@pytest.mark.parametrize(("tier", "mode"), TIERS_MODES)
def test_system_message_is_identical_for_every_agent_and_role(tier: str, mode: str) -> None:
    b = PromptBuilder(tier=tier, mode=mode)
    singles = {b.messages(r)[0] for r in VARIED}
    assert len(singles) == 1
    packed = {b.packed_messages(VARIED[:n])[0] for n in range(1, len(VARIED) + 1)}
    packed.add(b.packed_messages(list(reversed(VARIED)))[0])
    assert len(packed) == 1
    # A second builder of the same shape gives the same bytes: caches survive restarts.
    assert PromptBuilder(tier=tier, mode=mode).messages(VARIED[1])[0] == next(iter(singles))
    assert all(str(r.entity) not in next(iter(singles)).content.split() for r in VARIED)


@pytest.mark.parametrize(("tier", "mode"), TIERS_MODES)
def test_messages_are_system_then_user(tier: str, mode: str) -> None:
    b = PromptBuilder(tier=tier, mode=mode)
    assert [m.role for m in b.messages(VARIED[0])] == ["system", "user"]
    assert [m.role for m in b.packed_messages(VARIED)] == ["system", "user"]


@pytest.mark.parametrize("role", ROLES)
def test_role_instruction_opens_the_user_message(role: str) -> None:
    user = PromptBuilder().messages(make_req(role=role))[1].content
    assert user.startswith(f"{role}: {ROLE_INSTRUCTIONS[role]}\n")


def test_every_role_has_its_own_short_instruction() -> None:
    assert set(ROLE_INSTRUCTIONS) == set(ROLES)
    assert len(set(ROLE_INSTRUCTIONS.values())) == len(ROLES)
    assert all(len(text) <= 80 for text in ROLE_INSTRUCTIONS.values())


def test_unknown_and_custom_roles() -> None:
    b = PromptBuilder(role_instructions={"sniper": "shoot from far"})
    assert b.messages(make_req(role="sniper"))[1].content.startswith("sniper: shoot from far\n")
    generic = b.role_instruction("tactical")
    assert generic and generic != ROLE_INSTRUCTIONS["tactical"]


def test_guided_text_lists_a_unit_a_candidate_targets_past_the_nearest_few() -> None:
    far = Plan((Step("Attack", (106,)),))  # the 7th nearest enemy: past the 4 listed
    req = make_req(40, enemies=tuple(unit(100 + i, i + 1.5) for i in range(7)), candidates=(far,))
    user = PromptBuilder().messages(req)[1].content
    (enemies,) = [line for line in user.splitlines() if line.startswith("E:")]
    assert [e.split()[0] for e in enemies[2:].split(";")] == ["100", "101", "102", "103", "106"]
    assert "opts 0:A106" in user
    # the snapshot alone (no candidates) lists the nearest 4, as before
    assert "106" not in PromptBuilder().snapshot_text(req.snapshot)


def test_packed_user_message_has_one_block_per_agent_in_order() -> None:
    reqs = [make_req(33, "support"), make_req(12, "tactical"), make_req(15, "stealth")]
    user = PromptBuilder().packed_messages(reqs)[1].content
    heads = re.findall(r"^#(\d+) (\w+): ", user, flags=re.MULTILINE)
    assert heads == [("33", "support"), ("12", "tactical"), ("15", "stealth")]
    assert user.count("opts ") == 3


def test_packed_messages_need_a_request() -> None:
    with pytest.raises(ConfigError):
        PromptBuilder().packed_messages([])


def test_compact_snapshot_guided() -> None:
    req = make_req(40, "exploration", enemies=tuple(unit(100 + i, i + 1.5) for i in range(7)))
    text = PromptBuilder().snapshot_text(req.snapshot)
    assert text == (
        "me hp80 ammo2/6 range6 cov\n"
        "E:100 hp60 d2 cov;101 hp60 d2;102 hp60 d4 cov;103 hp60 d4\n"  # nearest 4 of 7
        "F:15 hp60 d1\n"
        "goal@20,20"
    )


def test_compact_snapshot_free_lists_ids_and_named_places_not_cells() -> None:
    snap = make_req().snapshot
    text = PromptBuilder(mode="free").snapshot_text(snap)
    places = free_options(snap).places
    assert [p.name for p in places] == [
        "cover",
        "cover",
        "goal",
        "near91",
        "away91",
        "near92",
        "away92",
    ]
    assert text == (
        "me#12 hp80 ammo2/6 range6 cov\n"
        "E:91 hp60 d4;92 hp60 d8 cov\n"
        "F:15 hp60 d1\n"
        "P:" + ";".join(f"{i} {p.name} d{p.steps}" for i, p in enumerate(places))
    )
    assert "@" not in text and "walls" not in text  # no coordinates to copy or misread


def test_free_mode_names_health_only_when_it_is_short_of_full() -> None:
    # Every digit is a token: "hp100" is four. Free mode leaves it out at full health (the
    # legend says so); guided mode's lines are unchanged.
    req = make_req()
    healthy = dataclasses.replace(
        req.snapshot,
        me=dataclasses.replace(req.snapshot.me, hp=100),
        enemies=(dataclasses.replace(unit(91, 4.0), hp=100), unit(92, 8.1)),
        allies=(dataclasses.replace(unit(15, 1.0), hp=100, max_hp=100),),
    )
    free = PromptBuilder(mode="free")
    lines = free.snapshot_text(healthy).splitlines()
    assert lines[:3] == ["me#12 ammo2/6 range6 cov", "E:91 d4;92 hp60 d8 cov", "F:15 d1"]
    assert "hpN = hurt" in free.messages(req)[0].content
    assert PromptBuilder().snapshot_text(healthy).splitlines()[:3] == [
        "me hp100 ammo2/6 range6 cov",
        "E:91 hp100 d4;92 hp60 d8 cov",
        "F:15 hp100 d1",
    ]
    # A larger maximum: health is named, with its maximum, once it is short of it.
    big = dataclasses.replace(healthy.me, hp=150, max_hp=150)
    assert free.snapshot_text(dataclasses.replace(healthy, me=big)).startswith("me#12 ammo")
    hurt = dataclasses.replace(big, hp=120)
    text = free.snapshot_text(dataclasses.replace(healthy, me=hurt))
    assert text.startswith("me#12 hp120/150 ammo")


def test_compact_snapshot_uses_integers_only() -> None:
    for mode in ("guided", "free"):
        text = PromptBuilder(mode=mode).snapshot_text(make_req().snapshot)
        assert not re.search(r"\d\.\d", text)


def test_candidates_are_listed_compactly() -> None:
    user = PromptBuilder().messages(make_req())[1].content
    assert user.endswith("\nopts 0:M3,4;A91 1:C5,6")
    assert PromptBuilder().candidates_text([Plan((Step("Reload"), Step("Wait", (3,))))]) == (
        "opts 0:R;W3"
    )


def test_free_mode_lists_no_candidates() -> None:
    user = PromptBuilder(mode="free").messages(make_req())[1].content
    assert "opts" not in user
    assert "M3,4" not in user


def test_candidate_with_an_unknown_action_is_refused() -> None:
    with pytest.raises(ConfigError):
        PromptBuilder().messages(make_req(candidates=(Plan((Step("Fly", (1,)),)),)))
    with pytest.raises(ConfigError):
        PromptBuilder().messages(make_req(candidates=(Plan((Step("MoveTo", (1,)),)),)))


def test_action_docs_come_from_the_registry() -> None:
    registry = ActionRegistry(
        [
            ActionSpec("Dig", "D", (ArgSpec("depth", ArgKind.COUNT, 2, 9),), "dig a tunnel"),
            ActionSpec("Hide", "H", (), "crouch behind something"),
        ]
    )
    req = make_req(candidates=(Plan((Step("Dig", (3,)),)), Plan((Step("Hide"),))))
    compressed = PromptBuilder(registry).messages(req)
    assert "D=Dig(depth) H=Hide" in compressed[0].content
    assert "MoveTo" not in compressed[0].content
    assert compressed[1].content.endswith("opts 0:D3 1:H")
    full = PromptBuilder(registry, tier="full", mode="free").messages(req)[0].content
    assert "Dig (code D): dig a tunnel. Arguments: depth (a count, 2..9)." in full
    assert "Hide (code H): crouch behind something. Arguments: none." in full
    assert "MoveTo" not in full


def test_default_docs_name_every_action_with_code_and_arguments() -> None:
    system = PromptBuilder().messages(make_req())[0].content
    for spec in DEFAULT_REGISTRY.actions:
        args = ",".join(a.name for a in spec.args)
        assert f"{spec.code}={spec.name}" + (f"({args})" if args else "") in system
    full = PromptBuilder(tier="full").messages(make_req())[0].content
    for spec in DEFAULT_REGISTRY.actions:
        assert f"{spec.name} (code {spec.code}): {spec.doc}." in full


def test_guided_system_gives_no_example_index_to_copy() -> None:
    system = PromptBuilder().messages(make_req())[0].content
    assert '{"c":N}' in system
    assert not re.search(r'"c":\s*\d', system)


def test_free_system_states_the_shape_without_an_example() -> None:
    system = PromptBuilder(mode="free").messages(make_req())[0].content
    assert system.endswith('Reply only {"plan":[[code,args...],...]}')
    assert "M=MoveTo(place)" in system and "A=Attack(target_id)" in system
    assert not re.search(r"\d", system.replace("1 to 4", ""))  # no number the model could copy


@pytest.mark.parametrize("tier", ["compressed", "full"])
def test_free_prompts_name_the_plan_key_and_never_the_old_one(tier: str) -> None:
    """The model is asked for the key the schema requires; the old one-letter key (Scan's
    letter, which the model then repeated as its first action) appears nowhere."""
    builder = PromptBuilder(tier=tier, mode="free")
    for msgs in (builder.messages(make_req()), builder.packed_messages([make_req()])):
        text = "\n".join(m.content for m in msgs)
        assert f'"{PLAN_KEY}":' in text
        assert f'"{LEGACY_PLAN_KEY}"' not in text


def test_full_tier_is_the_verbose_baseline() -> None:
    req = make_req()
    b = PromptBuilder(tier="full")
    system, user = (m.content for m in b.messages(req))
    assert "Worked examples:" in system
    assert system.count("Example ") >= 2
    pretty = user[user.index("{") : user.rindex("}") + 1]
    pretty = pretty[: pretty.index("\nCandidate plans")] if "Candidate" in pretty else pretty
    assert orjson.loads(pretty) == req.snapshot.to_dict()
    assert '\n  "me": {\n' in user  # indented, one key per line
    assert (
        'Option 0: {"steps":[{"act":"MoveTo","x":3,"y":4},{"act":"Attack","target_id":91}]}' in user
    )
    assert user.startswith("You are agent #12, role tactical: ")


@pytest.mark.parametrize("mode", ["guided", "free"])
def test_full_tier_examples_show_the_answer_shape_with_named_slots(mode: str) -> None:
    system = PromptBuilder(tier="full", mode=mode).messages(make_req())[0].content
    answers = re.findall(r"Answer: (.+)$", system, flags=re.MULTILINE)
    assert len(answers) == 3
    codec = PlanCodec(mode=mode)
    example_req = make_req(candidates=tuple(Plan((Step("Reload"),)) for _ in range(4)))
    for a in answers:
        assert re.search(r"<\w+>", a)  # a named slot, never a number
        with pytest.raises((ParseError, PlanRejected)):
            codec.decode(a, example_req)
        # With every slot filled in, it is an answer of the mode's shape.
        assert codec.decode(re.sub(r"<\w+>", "0", a), example_req)
    if mode == "free":
        assert '{"plan":[["A",<target_id>]]}' in answers
    packed = PromptBuilder(tier="full", mode=mode).packed_messages([make_req()])[0].content
    assert all(
        a.startswith('[{"id":<your id>,') for a in re.findall(r"Answer: (.+)$", packed, re.M)
    )


@pytest.mark.parametrize(("tier", "mode"), TIERS_MODES)
def test_no_prompt_holds_an_answer_the_agent_could_give(tier: str, mode: str) -> None:
    """A verbatim copy of anything in the prompt is never an answer the agent's schema (and so
    its grammar) admits: there is nothing to copy."""
    jsonschema = pytest.importorskip("jsonschema")
    builder = PromptBuilder(tier=tier, mode=mode)
    codec = PlanCodec(mode=mode)
    reqs = [r for r in VARIED if mode == "free" or r.candidates]
    for req in reqs:
        single = jsonschema.Draft202012Validator(codec.schema(req))
        packed = jsonschema.Draft202012Validator(codec.packed_schema([req]))
        for msgs in (builder.messages(req), builder.packed_messages([req])):
            for fragment in json_values("\n".join(m.content for m in msgs)):
                assert not single.is_valid(fragment), fragment
                assert not packed.is_valid(fragment), fragment
                # Nor one the codec would take from a backend without a grammar.
                with pytest.raises((ParseError, PlanRejected)):
                    codec.decode(orjson.dumps(fragment).decode(), req)


@pytest.mark.parametrize("mode", ["guided", "free"])
def test_compressed_is_much_smaller_than_full(mode: str) -> None:
    def size(tier: str) -> int:
        return sum(len(m.content) for m in PromptBuilder(tier=tier, mode=mode).messages(VARIED[0]))

    assert size("full") >= 4 * size("compressed")


def test_unknown_tier_or_mode() -> None:
    with pytest.raises(ConfigError):
        PromptBuilder(tier="tiny")
    with pytest.raises(ConfigError):
        PromptBuilder(mode="chaos")
