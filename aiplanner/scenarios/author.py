"""The scenario suite as written by hand, and the tool that writes it out as the package's JSON.

Every situation below is specified by hand, from game sense: where the agent stands, what it sees,
which first actions make sense and why. This module only does the arithmetic a person gets wrong
(distances, nearest-first order, who stands in cover, which cover points are taken), gives
every scenario ids of its own (:func:`relabel`) and writes one JSON file per role next to it.
The JSON files are what the package loads (:func:`aiplanner.scenarios.load_scenarios`); a test
checks they equal this module's output.

Rewrite them after an edit here: ``python -m aiplanner.scenarios.author``
(``--check`` only compares). To label more situations (training data for a small model), add
:class:`Situation` records in the same style, or write JSON files of the same shape.

Game facts behind the labels (:mod:`aiplanner.execution_system` and the components' defaults):
a shot does 20 damage, an agent has 100 hp, a magazine holds 6 rounds, the weapon reaches 6 cells,
a heal gives 25 hp, standing on a cover point protects. So an agent under 25 hp dies to one
shot, a 100-hp enemy needs five, and three enemies in range deal 60 a volley.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

__all__ = [
    "GOAL",
    "ME",
    "SITUATIONS",
    "Situation",
    "Unit",
    "main",
    "ok",
    "relabel",
    "render",
    "scenario_dict",
    "snapshot_dict",
]

ME: Final = 7
"""The agent's own id in every situation (a Heal on itself names it)."""
GOAL: Final = (20, 8)
"""The default objective."""

Cell = tuple[int, int]
_ID_LO, _ID_HI = 100, 1000  # three digits: never a two-digit example id of the prompts


@dataclass(frozen=True, slots=True)
class Unit:
    id: int
    x: int
    y: int
    hp: int = 100
    max_hp: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class Situation:
    """One hand-written scenario. ``accept`` entries are written with :func:`ok`."""

    name: str
    role: str
    at: Cell
    why: str
    accept: tuple[dict[str, object], ...]
    hp: int = 100
    max_hp: int = 100
    ammo: int = 6
    capacity: int = 6
    weapon_range: float = 6.0
    enemies: tuple[Unit, ...] = ()
    allies: tuple[Unit, ...] = ()
    cover: tuple[Cell, ...] = ()
    walls: tuple[Cell, ...] = ()
    goal: Cell | None = GOAL
    size: Cell = (24, 16)
    tick: int = 100


def ok(
    action: str,
    *targets: int,
    toward: Cell | None = None,
    away_from: Cell | None = None,
) -> dict[str, object]:
    """An acceptable first action: any of ``targets`` (if given), ending closer to ``toward`` /
    farther from ``away_from`` (if given)."""
    out: dict[str, object] = {"action": action}
    if targets:
        out["targets"] = list(targets)
    if toward is not None:
        out["toward"] = list(toward)
    if away_from is not None:
        out["away_from"] = list(away_from)
    return out


def _U(uid: int, x: int, y: int, hp: int = 100, max_hp: int = 100) -> Unit:
    return Unit(uid, x, y, hp, max_hp)


# fmt: off
TACTICAL: Final = (
    Situation(
        name="tactical-in-cover-enemy-in-range", role="tactical", at=(5, 7), hp=90, ammo=5,
        cover=((5, 7), (4, 11)), enemies=(_U(91, 9, 7, 60),), walls=((7, 5), (7, 6)),
        accept=(ok("Attack", 91),),
        why="In cover, loaded, one enemy in range: shoot it from where I stand.",
    ),
    Situation(
        name="tactical-empty-mag-enemy-close", role="tactical", at=(5, 7), hp=80, ammo=0,
        cover=((4, 9), (9, 12)), enemies=(_U(91, 8, 8, 80),),
        accept=(ok("Reload"), ok("TakeCover")),
        why="No bullets and an enemy three cells away: reload, or get to cover first.",
    ),
    Situation(
        name="tactical-enemy-just-out-of-range", role="tactical", at=(3, 7), ammo=6,
        cover=((5, 6), (2, 12)), enemies=(_U(91, 10, 4, 100),),
        accept=(ok("TakeCover"), ok("MoveTo", toward=(10, 4)), ok("Attack", 91)),
        why="The enemy is 7.6 cells away, out of my 6-cell range: close in, ideally via cover.",
    ),
    Situation(
        name="tactical-nothing-in-sight", role="tactical", at=(3, 3),
        cover=((6, 2),), walls=((5, 5), (5, 6)),
        accept=(ok("MoveTo", toward=GOAL), ok("Scan"), ok("TakeCover")),
        why="Nobody in sight, healthy and loaded: push on to the objective.",
    ),
    Situation(
        name="tactical-holding-the-objective", role="tactical", at=(20, 8),
        cover=((21, 9),),
        accept=(ok("Scan"), ok("Wait"), ok("TakeCover")),
        why="Standing on the objective with nothing in sight: hold it and watch.",
    ),
    Situation(
        name="tactical-low-mag-nothing-in-sight", role="tactical", at=(6, 10), ammo=1,
        accept=(ok("Reload"), ok("MoveTo", toward=GOAL), ok("Scan")),
        why="One round left but nobody around: topping up now is free, walking on is fine too.",
    ),
    Situation(
        name="tactical-nearly-dead-in-the-open", role="tactical", at=(6, 8), hp=15, ammo=4,
        cover=((5, 10), (2, 6)), enemies=(_U(91, 10, 8, 100), _U(92, 11, 9, 90)),
        accept=(ok("TakeCover"), ok("Retreat", away_from=(10, 8))),
        why="15 hp dies to one shot and two healthy enemies are in range: get out of the open.",
    ),
    Situation(
        name="tactical-outnumbered-three-to-one", role="tactical", at=(6, 8), hp=60,
        cover=((4, 8), (3, 12)),
        enemies=(_U(91, 10, 7, 100), _U(92, 11, 9, 100), _U(93, 10, 10, 100)),
        accept=(ok("TakeCover"), ok("Retreat", away_from=(10, 8))),
        why="Three healthy enemies in range deal 60 a volley and I have 60 hp: cover first.",
    ),
    Situation(
        name="tactical-last-bullet-three-close", role="tactical", at=(5, 7), hp=70, ammo=1,
        cover=((3, 8), (2, 4)),
        enemies=(_U(91, 8, 7, 100), _U(92, 9, 9, 100), _U(93, 9, 5, 100)),
        accept=(ok("TakeCover"), ok("Retreat", away_from=(8, 7))),
        why="One round cannot kill any of three full-health enemies in range: get to cover.",
    ),
    Situation(
        name="tactical-weak-enemy-behind-strong-one", role="tactical", at=(5, 7), hp=90,
        cover=((5, 7), (8, 7), (3, 11)),
        enemies=(_U(91, 8, 7, 100), _U(92, 10, 8, 15)),
        accept=(ok("Attack", 92),),
        why="A full-health enemy in cover and a 15-hp one in the open, both in range: the "
            "weak one dies to one shot, the covered one takes five.",
    ),
    Situation(
        name="tactical-open-duel-against-covered-enemy", role="tactical", at=(5, 7),
        cover=((4, 6), (10, 7), (2, 12)), enemies=(_U(91, 10, 7, 100),),
        accept=(ok("TakeCover"),),
        why="The enemy shoots from cover and I stand in the open with cover one step away: "
            "fight from cover.",
    ),
    Situation(
        name="tactical-last-shot-finishes-enemy", role="tactical", at=(5, 7), hp=18, ammo=3,
        cover=((3, 9),), enemies=(_U(91, 8, 7, 10),),
        accept=(ok("Attack", 91), ok("TakeCover"), ok("Retreat", away_from=(8, 7))),
        why="Badly hurt, but the only enemy has 10 hp and dies to one shot: shooting is fine.",
    ),
    Situation(
        name="tactical-nearly-dead-no-cover-enemy-far", role="tactical", at=(4, 4), hp=20,
        enemies=(_U(91, 11, 6, 100),), walls=((6, 2), (6, 3)),
        accept=(ok("Retreat", away_from=(11, 6)), ok("Heal", ME)),
        why="20 hp and a healthy enemy 7 cells out: walking into its range is suicide; back "
            "off or patch up.",
    ),
    Situation(
        name="tactical-dying-ally-nothing-in-sight", role="tactical", at=(5, 7),
        allies=(_U(10, 5, 8, 12),),
        accept=(ok("Heal", 10),),
        why="A teammate at 12 hp next to me and no enemy anywhere: heal before walking on.",
    ),
    Situation(
        name="tactical-nearly-dead-nothing-in-sight", role="tactical", at=(5, 7), hp=20,
        accept=(ok("Heal", ME),),
        why="20 hp dies to the first shot of the next fight; nobody is around: heal myself.",
    ),
    Situation(
        name="tactical-two-in-range-weakest-nearest", role="tactical", at=(5, 7),
        cover=((5, 7),), enemies=(_U(91, 8, 7, 30), _U(92, 10, 9, 100)),
        accept=(ok("Attack", 91),),
        why="From cover with two enemies in range: the nearest is also the weakest, shoot it.",
    ),
    Situation(
        name="tactical-empty-mag-in-cover-enemy-far", role="tactical", at=(5, 7), ammo=0,
        cover=((5, 7),), enemies=(_U(91, 12, 5, 100),),
        accept=(ok("Reload"),),
        why="Safe in cover with an empty magazine and the enemy out of range: reload.",
    ),
    Situation(
        name="tactical-hurt-ally-enemy-in-range", role="tactical", at=(5, 7), hp=80,
        cover=((5, 7),), enemies=(_U(91, 9, 9, 100),), allies=(_U(10, 4, 9, 35),),
        accept=(ok("Attack", 91), ok("Heal", 10)),
        why="An enemy in range and a hurt teammate: killing the threat protects the teammate; "
            "healing it is fine too.",
    ),
)

STEALTH: Final = (
    Situation(
        name="stealth-lone-weak-enemy-from-cover", role="stealth", at=(5, 7),
        cover=((5, 7), (3, 11)), enemies=(_U(91, 9, 8, 30),),
        accept=(ok("Attack", 91),),
        why="Hidden, one weak enemy alone in range: the strike a stealth agent waits for.",
    ),
    Situation(
        name="stealth-lone-enemy-cover-one-step", role="stealth", at=(5, 7),
        cover=((4, 8), (2, 2)), enemies=(_U(91, 9, 7, 100),),
        accept=(ok("TakeCover"), ok("Retreat", away_from=(9, 7))),
        why="Standing in the open near a lone healthy enemy: disappear into cover first.",
    ),
    Situation(
        name="stealth-patrol-passes-the-hideout", role="stealth", at=(5, 7),
        cover=((5, 7), (2, 12)),
        enemies=(_U(91, 10, 6, 100), _U(92, 11, 7, 100), _U(93, 10, 8, 100)),
        accept=(ok("Wait"), ok("Scan"), ok("Retreat", away_from=(10, 7))),
        why="Hidden while a patrol of three walks by in range: shooting gives me away to three "
            "guns; let them pass.",
    ),
    Situation(
        name="stealth-caught-in-the-open-by-a-pair", role="stealth", at=(5, 7),
        cover=((0, 15),), enemies=(_U(91, 9, 7, 100), _U(92, 10, 8, 100)),
        accept=(ok("Retreat", away_from=(9, 7)), ok("TakeCover")),
        why="Seen in the open by two healthy enemies, no cover close: an open fight is what "
            "stealth avoids; fall back.",
    ),
    Situation(
        name="stealth-empty-mag-enemy-near", role="stealth", at=(5, 7), ammo=0,
        cover=((4, 8), (1, 3)), enemies=(_U(91, 9, 7, 100),),
        accept=(ok("TakeCover"), ok("Retreat", away_from=(9, 7))),
        why="Empty magazine in the open near an enemy: hide first, reload in cover.",
    ),
    Situation(
        name="stealth-bound-to-cover-toward-goal", role="stealth", at=(3, 7),
        cover=((6, 7), (1, 12)),
        accept=(ok("TakeCover", toward=GOAL), ok("MoveTo", toward=GOAL)),
        why="Nothing in sight: advance on the goal from cover to cover.",
    ),
    Situation(
        name="stealth-hidden-nothing-in-sight", role="stealth", at=(9, 8),
        cover=((9, 8), (12, 7), (6, 12)),
        accept=(ok("MoveTo", toward=GOAL), ok("TakeCover", toward=GOAL), ok("Scan")),
        why="Hidden with nothing in sight: keep moving toward the goal.",
    ),
    Situation(
        name="stealth-nearly-dead-enemy-close", role="stealth", at=(5, 7), hp=15,
        cover=((5, 7), (1, 9)), enemies=(_U(91, 8, 8, 100),),
        accept=(ok("Retreat", away_from=(8, 8)), ok("Wait"), ok("Heal", ME)),
        why="15 hp against a full-health enemy: trading shots loses even from cover; slip "
            "away or stay hidden.",
    ),
    Situation(
        name="stealth-weak-enemy-out-of-range", role="stealth", at=(5, 7),
        cover=((5, 7), (8, 6)), enemies=(_U(91, 12, 5, 20),),
        accept=(ok("MoveTo", toward=(12, 5)), ok("TakeCover", toward=(12, 5)),
                ok("Attack", 91), ok("Wait")),
        why="A lone enemy with 20 hp just out of range: stalk it, or let it come.",
    ),
    Situation(
        name="stealth-pair-out-of-range-unaware", role="stealth", at=(5, 7),
        cover=((5, 7), (2, 12)), enemies=(_U(91, 12, 5, 100), _U(92, 12, 9, 100)),
        accept=(ok("Wait"), ok("Scan")),
        why="Hidden, two healthy enemies just out of range: walking out to them starts the "
            "open fight stealth avoids; watch and wait.",
    ),
    Situation(
        name="stealth-empty-mag-hidden-nothing-seen", role="stealth", at=(5, 7), ammo=0,
        cover=((5, 7),),
        accept=(ok("Reload"),),
        why="Hidden, nobody around, empty magazine: reload.",
    ),
    Situation(
        name="stealth-weak-enemy-in-range-cover-near", role="stealth", at=(5, 7),
        cover=((4, 6), (1, 12)), enemies=(_U(91, 9, 8, 20),),
        accept=(ok("TakeCover"), ok("Attack", 91)),
        why="A lone 20-hp enemy in range: one shot kills it; from cover is better still.",
    ),
    Situation(
        name="stealth-last-round-pair-in-range", role="stealth", at=(5, 7), ammo=1,
        cover=((5, 7), (1, 10)), enemies=(_U(91, 9, 6, 100), _U(92, 10, 8, 100)),
        accept=(ok("Reload"), ok("Wait"), ok("Retreat", away_from=(9, 6))),
        why="Hidden with one round and two healthy enemies in range: a shot reveals me and "
            "kills nobody; reload or stay still.",
    ),
    Situation(
        name="stealth-nearly-dead-hidden-quiet", role="stealth", at=(5, 7), hp=20,
        cover=((5, 7),),
        accept=(ok("Heal", ME), ok("Wait")),
        why="20 hp, hidden, nobody around: patch up before moving on.",
    ),
    Situation(
        name="stealth-cover-duel-lone-enemy", role="stealth", at=(5, 7),
        cover=((5, 7), (9, 9)), enemies=(_U(91, 9, 9, 60),),
        accept=(ok("Attack", 91), ok("Wait")),
        why="A lone, hurt enemy in cover in range while I am hidden: shooting first wins.",
    ),
    Situation(
        name="stealth-enemy-between-me-and-goal", role="stealth", at=(10, 8),
        cover=((11, 5), (8, 12)), enemies=(_U(91, 16, 8, 100),),
        accept=(ok("TakeCover"), ok("Attack", 91)),
        why="A lone healthy enemy in range in my path, me in the open: cover first, then "
            "strike.",
    ),
)

SUPPORT: Final = (
    Situation(
        name="support-hurt-ally-quiet", role="support", at=(5, 7),
        allies=(_U(10, 6, 9, 30),),
        accept=(ok("Heal", 10),),
        why="A teammate at 30 hp and no enemy: heal it.",
    ),
    Situation(
        name="support-two-hurt-heal-the-worst", role="support", at=(5, 7),
        allies=(_U(10, 4, 8, 40), _U(11, 7, 10, 15)),
        accept=(ok("Heal", 11),),
        why="Two hurt teammates: the one at 15 hp dies to one shot, heal it first.",
    ),
    Situation(
        name="support-empty-mag-dying-ally-quiet", role="support", at=(5, 7), ammo=0,
        allies=(_U(10, 6, 8, 10),),
        accept=(ok("Heal", 10),),
        why="A teammate at 10 hp beside me and nobody to shoot: the empty magazine can wait.",
    ),
    Situation(
        name="support-empty-mag-dying-ally-enemy-far", role="support", at=(5, 7), ammo=0,
        cover=((4, 9), (2, 3)), allies=(_U(10, 6, 8, 12),), enemies=(_U(91, 12, 4, 100),),
        accept=(ok("Heal", 10),),
        why="A teammate at 12 hp and the enemy out of range: keep the teammate alive first.",
    ),
    Situation(
        name="support-nobody-hurt-enemy-in-range", role="support", at=(5, 7),
        cover=((5, 7),), allies=(_U(10, 7, 6, 90),), enemies=(_U(91, 10, 8, 100),),
        accept=(ok("Attack", 91),),
        why="Nobody needs healing and an enemy is in range of my cover: help the fight.",
    ),
    Situation(
        name="support-self-hurt-quiet", role="support", at=(5, 7), hp=30,
        allies=(_U(10, 7, 6, 95),),
        accept=(ok("Heal", ME),),
        why="I am at 30 hp and nobody else is hurt or shooting: heal myself.",
    ),
    Situation(
        name="support-follow-nothing-in-sight", role="support", at=(4, 8),
        allies=(_U(10, 6, 8, 100), _U(11, 6, 10, 90)),
        accept=(ok("MoveTo", toward=GOAL), ok("Scan"), ok("Wait")),
        why="Healthy squad, nothing in sight: follow the squad toward the goal.",
    ),
    Situation(
        name="support-nearly-dead-under-fire-ally-hurt", role="support", at=(5, 7), hp=12,
        cover=((4, 8), (1, 2)), allies=(_U(10, 7, 6, 45),), enemies=(_U(91, 9, 7, 100),),
        accept=(ok("TakeCover"), ok("Retreat", away_from=(9, 7)), ok("Heal", ME)),
        why="At 12 hp in range of a healthy enemy I die to its next shot; the teammate at 45 "
            "can take two more. Save myself first.",
    ),
    Situation(
        name="support-hurt-ally-enemy-in-range", role="support", at=(5, 7),
        cover=((5, 7),), allies=(_U(10, 6, 9, 30),), enemies=(_U(91, 10, 8, 100),),
        accept=(ok("Heal", 10), ok("Attack", 91)),
        why="A teammate at 30 hp next to me and an enemy in range: heal it (or shoot back).",
    ),
    Situation(
        name="support-empty-mag-dying-ally-enemy-in-range", role="support", at=(5, 7), ammo=0,
        cover=((4, 6), (1, 12)), allies=(_U(10, 5, 9, 8),), enemies=(_U(91, 10, 8, 100),),
        accept=(ok("Heal", 10),),
        why="A teammate at 8 hp dies to the next shot; reloading saves nobody: heal now.",
    ),
    Situation(
        name="support-enemy-out-of-range-squad-fine", role="support", at=(4, 8),
        cover=((5, 9), (1, 4)), allies=(_U(10, 7, 8, 100),), enemies=(_U(91, 11, 5, 100),),
        accept=(ok("TakeCover"), ok("Wait"), ok("Scan")),
        why="An enemy just out of range and nobody hurt: stay behind the squad, in cover.",
    ),
    Situation(
        name="support-empty-mag-nobody-hurt", role="support", at=(5, 7), ammo=0,
        allies=(_U(10, 6, 9, 100),),
        accept=(ok("Reload"),),
        why="Nobody hurt, nobody in sight, empty magazine: reload.",
    ),
    Situation(
        name="support-both-hurt-ally-worse", role="support", at=(5, 7), hp=40,
        allies=(_U(10, 6, 9, 20),),
        accept=(ok("Heal", 10),),
        why="I am at 40, my teammate at 20: it dies first, heal it.",
    ),
    Situation(
        name="support-nearly-dead-enemy-adjacent", role="support", at=(5, 7), hp=10,
        cover=((3, 7), (1, 12)), enemies=(_U(91, 7, 7, 100),),
        accept=(ok("TakeCover"), ok("Retreat", away_from=(7, 7))),
        why="10 hp with a healthy enemy two cells away: a 25-hp heal is undone by two shots; "
            "get out of its sight.",
    ),
    Situation(
        name="support-weak-enemy-in-range", role="support", at=(5, 7),
        cover=((5, 7),), allies=(_U(10, 6, 5, 80),), enemies=(_U(91, 9, 7, 20),),
        accept=(ok("Attack", 91),),
        why="Nobody hurt and a 20-hp enemy in range: one shot removes it.",
    ),
    Situation(
        name="support-hurt-ally-far", role="support", at=(4, 8),
        allies=(_U(10, 11, 5, 30),),
        accept=(ok("Heal", 10),),
        why="A teammate at 30 hp seven cells away and no enemy: go heal it.",
    ),
)

EXPLORATION: Final = (
    Situation(
        name="exploration-nothing-in-sight", role="exploration", at=(3, 3),
        accept=(ok("Scan"), ok("MoveTo", toward=GOAL)),
        why="Nothing known yet: look around and push ahead.",
    ),
    Situation(
        name="exploration-on-the-goal", role="exploration", at=(20, 8),
        accept=(ok("Scan"), ok("MoveTo")),
        why="On the goal with nothing in sight: scan, then scout a fresh spot.",
    ),
    Situation(
        name="exploration-squad-spotted-no-cover", role="exploration", at=(4, 8),
        enemies=(_U(91, 11, 5, 100), _U(92, 12, 8, 100), _U(93, 11, 11, 100)),
        accept=(ok("Retreat", away_from=(12, 8)), ok("Scan"), ok("Wait"), ok("TakeCover")),
        why="A scout that spots three healthy enemies just out of range should not walk into "
            "their guns: watch or pull back.",
    ),
    Situation(
        name="exploration-lone-enemy-in-range", role="exploration", at=(5, 7),
        cover=((4, 8),), enemies=(_U(91, 9, 7, 100),),
        accept=(ok("Attack", 91), ok("TakeCover")),
        why="One enemy in range, me loaded: fight it, from cover if I can.",
    ),
    Situation(
        name="exploration-empty-mag-quiet", role="exploration", at=(5, 7), ammo=0,
        accept=(ok("Reload"), ok("Scan"), ok("MoveTo", toward=GOAL)),
        why="Empty magazine, nobody around: reload now or keep scouting.",
    ),
    Situation(
        name="exploration-nearly-dead-enemy-in-range", role="exploration", at=(5, 7), hp=15,
        cover=((4, 9), (1, 3)), enemies=(_U(91, 10, 7, 100),),
        accept=(ok("TakeCover"), ok("Retreat", away_from=(10, 7))),
        why="15 hp in the open in range of a healthy enemy: one shot kills me; get away.",
    ),
    Situation(
        name="exploration-dying-ally-quiet", role="exploration", at=(5, 7),
        allies=(_U(10, 5, 6, 12),),
        accept=(ok("Heal", 10),),
        why="A teammate at 12 hp beside me and no enemy in sight: heal it before scouting on.",
    ),
    Situation(
        name="exploration-corridor-between-walls", role="exploration", at=(8, 8),
        walls=((7, 7), (8, 7), (9, 7), (7, 9), (8, 9), (9, 9)),
        accept=(ok("Scan"), ok("MoveTo")),
        why="In a corridor with nothing in sight: scan and keep exploring.",
    ),
    Situation(
        name="exploration-outnumbered-in-range", role="exploration", at=(5, 7), hp=80,
        cover=((4, 6), (1, 12)),
        enemies=(_U(91, 9, 6, 100), _U(92, 10, 8, 100), _U(93, 9, 10, 100)),
        accept=(ok("TakeCover"), ok("Retreat", away_from=(9, 8))),
        why="Three healthy enemies in range of a scout in the open: take cover or pull back.",
    ),
    Situation(
        name="exploration-weak-enemy-out-of-range", role="exploration", at=(5, 7),
        cover=((7, 6),), enemies=(_U(91, 12, 6, 15),),
        accept=(ok("MoveTo", toward=(12, 6)), ok("Attack", 91), ok("TakeCover")),
        why="A lone 15-hp enemy just out of range: close in and finish it.",
    ),
    Situation(
        name="exploration-squad-ahead-nothing-seen", role="exploration", at=(6, 9),
        allies=(_U(10, 8, 9, 100), _U(11, 8, 11, 100)),
        accept=(ok("Scan"), ok("MoveTo", toward=GOAL)),
        why="Squad healthy, nothing seen: scout on toward the goal.",
    ),
    Situation(
        name="exploration-nearly-dead-quiet", role="exploration", at=(5, 7), hp=20,
        accept=(ok("Heal", ME),),
        why="20 hp and nobody around: heal before scouting into the next fight.",
    ),
    Situation(
        name="exploration-empty-mag-enemy-in-range", role="exploration", at=(5, 7), ammo=0,
        cover=((5, 9),), enemies=(_U(91, 9, 8, 100),),
        accept=(ok("Reload"), ok("TakeCover")),
        why="Empty magazine with an enemy in range: reload or get to cover.",
    ),
    Situation(
        name="exploration-cover-duel", role="exploration", at=(5, 7),
        cover=((5, 7), (9, 9)), enemies=(_U(91, 9, 9, 70),),
        accept=(ok("Attack", 91),),
        why="In cover with a lone enemy in range: shoot.",
    ),
    Situation(
        name="exploration-low-mag-on-goal", role="exploration", at=(20, 8), ammo=1,
        accept=(ok("Reload"), ok("Scan"), ok("MoveTo")),
        why="On the goal, one round left, nobody around: reload or scout on.",
    ),
    Situation(
        name="exploration-dead-end", role="exploration", at=(1, 1), goal=(20, 12),
        walls=((3, 0), (3, 1), (3, 2), (0, 3), (1, 3)),
        accept=(ok("Scan"), ok("MoveTo")),
        why="Boxed into a corner with nothing in sight: scan, then find the way out.",
    ),
)
# fmt: on

SITUATIONS: Final = {
    "tactical.json": TACTICAL,
    "stealth.json": STEALTH,
    "support.json": SUPPORT,
    "exploration.json": EXPLORATION,
}
"""The suite: file name -> its situations, in order."""


def relabel(s: Situation) -> dict[int, int]:
    """New ids for the agent and every unit of ``s``: stable (seeded by the name), distinct.

    Situations are written with readable ids (me 7, enemies 91..., allies 10...); the suite ships
    other ids in every scenario, so a model that copies an id from its prompt's examples (91 was
    one) is never right by accident, and no id means the same thing across the suite.
    """
    rng = random.Random(hashlib.sha256(s.name.encode()).digest())
    old = [ME, *(u.id for u in s.enemies), *(u.id for u in s.allies)]
    return dict(zip(old, rng.sample(range(_ID_LO, _ID_HI), len(old)), strict=True))


def scenario_dict(s: Situation) -> dict[str, object]:
    """``s`` as a suite entry (``name``, ``why``, ``accept``, ``snapshot``), ids relabelled."""
    ids = relabel(s)
    accept = [_relabel_targets(a, ids) for a in s.accept]
    return {"name": s.name, "why": s.why, "accept": accept, "snapshot": snapshot_dict(s, ids)}


def _relabel_targets(entry: dict[str, object], ids: Mapping[int, int]) -> dict[str, object]:
    targets = entry.get("targets")
    if not isinstance(targets, list):
        return entry
    return {**entry, "targets": [ids[t] for t in targets]}


def snapshot_dict(s: Situation, ids: Mapping[int, int] | None = None) -> dict[str, object]:
    """``s`` in the :meth:`WorldSnapshot.to_dict` shape, with the map's walls and cover; ids
    mapped through ``ids`` (default: as written)."""
    new = ids or {}
    here = s.at
    cover_set = set(s.cover)
    taken = {(u.x, u.y) for u in (*s.enemies, *s.allies)}

    def dist(c: Cell) -> float:
        return round(math.dist(here, c), 1)

    def unit(u: Unit) -> dict[str, object]:
        return {
            "id": new.get(u.id, u.id),
            "x": u.x,
            "y": u.y,
            "hp": u.hp,
            "max_hp": u.max_hp,
            "in_cover": (u.x, u.y) in cover_set,
            "dist": dist((u.x, u.y)),
        }

    def nearest(units: Sequence[Unit]) -> list[dict[str, object]]:
        return [unit(u) for u in sorted(units, key=lambda u: (dist((u.x, u.y)), u.id))]

    free = sorted((c for c in s.cover if c not in taken), key=lambda c: (dist(c), c))
    return {
        "tick": s.tick,
        "me": {
            "id": new.get(ME, ME),
            "role": s.role,
            "team": 0,
            "x": here[0],
            "y": here[1],
            "hp": s.hp,
            "max_hp": s.max_hp,
            "ammo": s.ammo,
            "ammo_capacity": s.capacity,
            "in_cover": here in cover_set,
            "weapon_range": s.weapon_range,
        },
        "enemies": nearest(s.enemies),
        "allies": nearest(s.allies),
        "cover": [list(c) for c in free],
        "obstacles": [list(c) for c in sorted(s.walls, key=lambda c: (dist(c), c))],
        "objective": list(s.goal) if s.goal is not None else None,
        "map": list(s.size),
    }


def render() -> dict[str, bytes]:
    """Every suite file's JSON text: one scenario per block, its snapshot on one line."""
    out: dict[str, bytes] = {}
    for filename, situations in SITUATIONS.items():
        blocks = []
        for s in situations:
            fields = [f"{_j(key)}: {_j(value)}" for key, value in scenario_dict(s).items()]
            blocks.append("  {" + ",\n   ".join(fields) + "}")
        out[filename] = ('{"scenarios": [\n' + ",\n".join(blocks) + "\n]}\n").encode()
    return out


def _j(value: object) -> str:
    return orjson.dumps(value).decode()


def main(argv: Sequence[str] | None = None) -> int:
    """Write the suite's JSON files beside this module (``--check``: only compare)."""
    parser = argparse.ArgumentParser(prog="python -m aiplanner.scenarios.author")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file differs")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    stale = []
    for filename, text in render().items():
        path = args.out / filename
        if path.exists() and path.read_bytes() == text:
            continue
        stale.append(filename)
        if not args.check:
            path.write_bytes(text)
    verb = "differ" if args.check else "written"
    print(f"{len(stale)} file(s) {verb}: {', '.join(stale) or '-'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
