"""Scoring examples from teacher labels: the same text a live decision scores."""

from __future__ import annotations

from aiplanner.actions import DEFAULT_REGISTRY, Plan, Step
from aiplanner.components import Battlefield
from aiplanner.training.dataset import make_examples
from aiplanner.training.situations import Situation, UnitSpec, situation_snapshot
from aiplanner.training.teacher import Label

OPEN = Battlefield(30, 20, frozenset(), (), None)


def test_an_example_describes_every_unit_its_candidates_name() -> None:
    me = UnitSpec(team=0, role="support", x=10, y=10)
    # five allies, nearest first; the farthest badly hurt: the situation lists the nearest three
    allies = tuple(
        UnitSpec(team=0, role="tactical", x=11 + i, y=10, hp=30 if i == 4 else 100)
        for i in range(5)
    )
    enemy = UnitSpec(team=1, role="tactical", x=20, y=15)
    sit = Situation(seed=3, kind="hand", field=OPEN, me=me, allies=allies, enemies=(enemy,))
    _, roster = situation_snapshot(sit)
    heal = Plan((Step("Heal", (roster.allies[4],)),))
    wait = Plan((Step("Scan", ()),))
    label = Label(sit, (wait, heal), (0.0, 1.0), best=1, margin=1.0)
    (example,), dropped = make_examples([label], DEFAULT_REGISTRY)
    assert not dropped
    assert example.phrases[1] == " heal ally 5"
    text = example.messages[-1].content
    assert "\nAlly 5: near, badly hurt.\n" in text and "Ally 4" not in text
