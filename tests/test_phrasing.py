"""Plain words for scored decisions: situations and candidate phrases."""

from __future__ import annotations

from dataclasses import replace

import pytest
from scenario import make_snapshot

from aiplanner.actions import (
    DEFAULT_REGISTRY,
    ActionRegistry,
    ActionSpec,
    ArgKind,
    ArgSpec,
    Plan,
    Step,
)
from aiplanner.backends.base import Message
from aiplanner.errors import ConfigError
from aiplanner.phrasing import (
    LEAD,
    SYSTEM,
    content_free_messages,
    decision_prompt,
    plan_phrase,
    situation_messages,
    situation_text,
)
from aiplanner.snapshot import SeenUnit, WorldSnapshot


def _snap(**changes: object) -> WorldSnapshot:
    snap = make_snapshot(7)
    assert isinstance(snap, WorldSnapshot)
    me = replace(snap.me, **{k: v for k, v in changes.items() if hasattr(snap.me, k)})
    rest = {k: v for k, v in changes.items() if not hasattr(snap.me, k)}
    return replace(snap, me=me, **rest)  # type: ignore[arg-type]


def test_situation_states_the_decisive_facts() -> None:
    text = situation_text(_snap(hp=20, ammo=0), "fight from cover")
    assert text.splitlines() == [
        "I am a tactical: fight from cover.",
        "Me: nearly dead, no ammo, in the open.",
        "Enemy 1: close, in range.",
        "Enemy 2: near, in range.",
        "Ally 1: close, badly hurt.",
        "Cover is close.",
        "The goal is far.",
    ]


def test_situation_changes_with_the_situation() -> None:
    calm = situation_text(_snap(enemies=(), in_cover=True))
    assert "No enemy in sight." in calm and "Me: healthy, ammo ok, in cover." in calm
    assert "Cover" not in calm  # in cover already: nothing to say about cover
    crowd = tuple(SeenUnit(90 + i, 5, 3 + i, 100, False, 2.0 + i) for i in range(4))
    assert "We are outnumbered 4 to 2." in situation_text(_snap(enemies=crowd))
    assert situation_text(_snap(hp=90)) != situation_text(_snap(hp=30))
    assert "low ammo" in situation_text(_snap(ammo=2))


def test_neighbours_described_alike_share_a_line() -> None:
    def unit(i: int, hp: int, dist: float, cover: bool = False) -> SeenUnit:
        return SeenUnit(90 + i, 5, 3 + i, hp, cover, dist)

    enemies = (unit(0, 100, 2.0), unit(1, 100, 2.5), unit(2, 30, 2.8), unit(3, 100, 2.9))
    allies = (unit(4, 100, 1.0), unit(5, 100, 2.0), unit(6, 100, 3.0))
    lines = situation_text(_snap(enemies=enemies, allies=allies)).splitlines()
    # a run of alike units shares a line; alike units that are not neighbours do not: every
    # rank a phrase can name ("enemy 4") falls in exactly one line
    assert lines[2:6] == [
        "Enemies 1-2: close, in range.",
        "Enemy 3: close, in range, badly hurt.",
        "Enemy 4: close, in range.",
        "Allies 1-3: close.",
    ]


def test_a_unit_a_candidate_names_past_the_nearest_few_is_described() -> None:
    def unit(i: int, hp: int, dist: float) -> SeenUnit:
        return SeenUnit(90 + i, 5, 3 + i, hp, False, dist)

    enemies = tuple(unit(i, 100, 2.0 + i) for i in range(6))  # ranks 1-6; 1-4 described
    allies = tuple(unit(10 + i, 30 if i == 4 else 100, 1.0 + i) for i in range(5))
    snap = _snap(enemies=enemies, allies=allies)
    plans = (
        Plan((Step("Heal", (allies[4].id,)),)),  # ally 5: badly hurt, past the three described
        Plan((Step("Attack", (enemies[5].id,)),)),  # enemy 6
        Plan((Step("Attack", (enemies[0].id,)),)),  # enemy 1: described already
    )
    named = DEFAULT_REGISTRY.targets(plans)
    assert named == {allies[4].id, enemies[5].id, enemies[0].id}
    assert [plan_phrase(p, snap, DEFAULT_REGISTRY) for p in plans[:2]] == [
        " heal ally 5",
        " shoot enemy 6",
    ]
    plain = situation_text(snap).splitlines()
    lines = situation_text(snap, named=named).splitlines()
    assert not any(line.startswith(("Ally 5", "Enemy 6")) for line in plain)
    # each in its own line, by the rank the phrase names, after the units described anyway
    assert lines == [
        *plain[:4],
        "Enemy 6: near, out of range.",
        plain[4],
        "Ally 5: near, badly hurt.",
        *plain[5:],
    ]
    assert sum(line.startswith(("Enemy 1:", "Enemies 1-")) for line in lines) == 1  # never twice
    assert situation_messages(snap, named=named)[1].content == "\n".join(lines)
    # the one place every scored prompt is built: the same lines, the role first, each phrase
    messages, phrases = decision_prompt(snap, plans, DEFAULT_REGISTRY, "hold the line")
    assert messages[0] == Message("system", SYSTEM)
    assert lines[0] == f"I am a {snap.me.role}."
    assert messages[1].content.splitlines() == [
        f"I am a {snap.me.role}: hold the line.",
        *lines[1:],
    ]
    assert phrases == tuple(plan_phrase(p, snap, DEFAULT_REGISTRY) for p in plans)
    with pytest.raises(ConfigError, match="Bad"):
        decision_prompt(snap, (Plan((Step("Bad"),)),), DEFAULT_REGISTRY)


def test_system_message_is_the_same_for_every_agent() -> None:
    a = situation_messages(_snap(hp=10))
    b = situation_messages(_snap(hp=90, role="support"))
    assert a[0] == b[0] and a[0].content == SYSTEM and a[1] != b[1]
    assert content_free_messages()[0] == a[0]
    assert LEAD == "I should"


def test_plan_phrases_from_the_registry() -> None:
    snap = _snap()
    plan = Plan((Step("TakeCover", snap.cover[0]), Step("Attack", (snap.enemies[0].id,))))
    assert plan_phrase(plan, snap, DEFAULT_REGISTRY) == " run to cover, then shoot enemy 1"
    second = Plan((Step("Attack", (snap.enemies[1].id,)),))
    assert plan_phrase(second, snap, DEFAULT_REGISTRY) == " shoot enemy 2"
    assert plan_phrase(Plan((Step("Heal", (snap.allies[0].id,)),)), snap, DEFAULT_REGISTRY) == (
        " heal ally 1"
    )
    assert plan_phrase(Plan((Step("Reload"),)), snap, DEFAULT_REGISTRY) == " reload my weapon"
    heal_self = Plan((Step("Heal", (snap.me.id,)),))
    assert plan_phrase(heal_self, snap, DEFAULT_REGISTRY) == " heal myself"


def test_place_is_described_against_the_snapshot() -> None:
    snap = _snap()
    reg = DEFAULT_REGISTRY
    assert plan_phrase(Plan((Step("MoveTo", (10, 9)),)), snap, reg) == " walk to the goal"
    assert plan_phrase(Plan((Step("MoveTo", (5, 3)),)), snap, reg) == " walk closer to enemy 1"
    assert plan_phrase(Plan((Step("MoveTo", (0, 3)),)), snap, reg) == " walk away from enemy 1"
    assert plan_phrase(Plan((Step("MoveTo", snap.cover[0]),)), snap, reg) == " walk to cover"


def test_a_game_action_gets_a_phrase_and_bad_templates_fail_clearly() -> None:
    reg = ActionRegistry(
        [
            ActionSpec(
                "Forage", "F", (ArgSpec("n", ArgKind.COUNT, 1, 9),), "find food", "forage {n} times"
            ),
            ActionSpec("Rest", "R", (), "rest a while"),
            ActionSpec("Bad", "B", (), "broken", "do {missing}"),
        ]
    )
    snap = _snap()
    assert plan_phrase(Plan((Step("Forage", (3,)), Step("Rest"))), snap, reg) == (
        " forage 3 times, then rest a while"
    )
    with pytest.raises(ConfigError, match="Bad"):
        plan_phrase(Plan((Step("Bad"),)), snap, reg)


def test_a_place_argument_is_described_like_a_cell() -> None:
    from aiplanner.places import pack_cell

    reg = ActionRegistry(
        [
            ActionSpec(
                "Go", "G", (ArgSpec("to", ArgKind.PLACE, 0, 2**31 - 1),), "go", "go {place}"
            ),
            ActionSpec("Rest", "R", (), "rest a while"),
        ]
    )
    snap = _snap()
    goal = snap.objective
    assert goal is not None
    assert plan_phrase(Plan((Step("Go", (pack_cell(*goal),)),)), snap, reg) == " go to the goal"
    cover = snap.cover[0]
    assert plan_phrase(Plan((Step("Go", (pack_cell(*cover),)),)), snap, reg) == " go to cover"
