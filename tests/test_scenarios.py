"""The scenario suite: the shipped data loads, covers what it must, and bad files are refused."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from aiplanner.actions import ActionRegistry, ActionSpec, ArgKind, ArgSpec, Plan, Step
from aiplanner.components import ROLES
from aiplanner.errors import ConfigError
from aiplanner.evaluation import audit_suite
from aiplanner.places import pack_cell
from aiplanner.scenarios import author, load_scenarios, parse_scenarios, suite_files


def _scenario(**changes: Any) -> dict[str, Any]:
    """One valid scenario as JSON data: a tactical agent at 5,7 sees enemy 91 four cells east."""
    base: dict[str, Any] = {
        "name": "probe",
        "why": "a test",
        "snapshot": {
            "tick": 1,
            "me": {
                "id": 7,
                "role": "tactical",
                "team": 0,
                "x": 5,
                "y": 7,
                "hp": 100,
                "max_hp": 100,
                "ammo": 6,
                "ammo_capacity": 6,
                "in_cover": False,
                "weapon_range": 6.0,
            },
            "enemies": [{"id": 91, "x": 9, "y": 7, "hp": 50, "in_cover": False, "dist": 4.0}],
            "allies": [{"id": 10, "x": 5, "y": 8, "hp": 30, "in_cover": False, "dist": 1.0}],
            "cover": [[4, 6]],
            "obstacles": [[6, 6]],
            "objective": [20, 8],
            "map": [24, 16],
        },
        "accept": [{"action": "Attack", "targets": [91]}],
    }
    base.update(changes)
    return base


def _parse(*items: dict[str, Any], source: str = "probe.json") -> tuple[Any, ...]:
    return parse_scenarios({"scenarios": list(items)}, source)


# -- the shipped suite ---------------------------------------------------------------------------


def test_shipped_suite_is_package_data_one_file_per_role() -> None:
    assert sorted(f.name for f in suite_files()) == sorted(f"{r}.json" for r in ROLES)


def test_shipped_suite_covers_every_role_with_enough_situations() -> None:
    suite = load_scenarios()
    assert len(suite) >= 60
    per_role = {r: sum(s.role == r for s in suite) for r in ROLES}
    assert min(per_role.values()) >= 12, per_role
    assert len({s.name for s in suite}) == len(suite)


def test_shipped_files_are_what_the_author_module_writes() -> None:
    rendered = author.render()
    shipped = {f.name: f.read_bytes() for f in suite_files()}
    assert rendered == shipped, "run: python -m aiplanner.scenarios.author"


def test_author_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    assert author.main(["--out", str(tmp_path)]) == 0
    assert author.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "stealth.json").write_bytes(b"{}")
    assert author.main(["--out", str(tmp_path), "--check"]) == 1


def test_suite_has_at_least_twelve_cases_where_the_rules_are_wrong() -> None:
    audit = audit_suite(load_scenarios())
    # If the rules got better, the suite needs new hard cases, not a lower bar.
    assert len(audit.rules_wrong) >= 12, audit.rules_wrong
    assert set(audit.fixable) | set(audit.unfixable) == set(audit.rules_wrong)


def test_every_scenario_round_trips_through_to_dict() -> None:
    for s in load_scenarios():
        again = parse_scenarios({"scenarios": [s.to_dict()]}, s.source)[0]
        assert again.accept == s.accept
        assert again.snapshot.to_dict() == s.snapshot.to_dict()
        assert again.snapshot.field == s.snapshot.field


# -- judging -------------------------------------------------------------------------------------


def test_judge_checks_action_then_target() -> None:
    (s,) = _parse(_scenario(accept=[{"action": "Attack", "targets": [91]}, {"action": "Reload"}]))
    attack = s.judge(Plan((Step("Attack", (91,)),)))
    assert (attack.action_ok, attack.target_checked, attack.target_ok, attack.sensible) == (
        True,
        True,
        True,
        True,
    )
    reload = s.judge(Plan((Step("Reload"), Step("Attack", (91,)))))
    assert reload.sensible and not reload.target_checked
    heal = s.judge(Plan((Step("Heal", (10,)),)))
    assert not heal.action_ok and not heal.sensible


def test_judge_wrong_target_is_action_ok_but_not_sensible() -> None:
    (s,) = _parse(
        _scenario(accept=[{"action": "Heal", "targets": [7]}]),
    )
    j = s.judge(Plan((Step("Heal", (10,)),)))
    assert j.action_ok and j.target_checked and not j.target_ok and not j.sensible


def test_judge_an_unconstrained_entry_accepts_any_target() -> None:
    (s,) = _parse(
        _scenario(accept=[{"action": "Heal", "targets": [7]}, {"action": "Heal"}]),
    )
    assert s.judge(Plan((Step("Heal", (10,)),))).sensible


def test_judge_toward_and_away_from_compare_with_where_the_agent_stands() -> None:
    (s,) = _parse(
        _scenario(
            accept=[
                {"action": "MoveTo", "toward": [20, 8]},
                {"action": "Retreat", "away_from": [9, 7]},
            ]
        )
    )
    assert s.judge(Plan((Step("MoveTo", (8, 8)),))).sensible
    assert not s.judge(Plan((Step("MoveTo", (2, 7)),))).sensible
    assert s.judge(Plan((Step("Retreat", (2, 7)),))).sensible
    assert not s.judge(Plan((Step("Retreat", (7, 7)),))).sensible


# -- the loader refuses bad files, naming the file and the scenario ------------------------------


def _bad(mutate: Any) -> dict[str, Any]:
    item = _scenario(name="broken-one")
    mutate(item)
    return item


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda s: s.pop("why"), "keys missing ['why']"),
        (lambda s: s.update(extra=1), "unknown ['extra']"),
        (lambda s: s.update(name="Bad Name"), "name must be"),
        (lambda s: s.update(accept=[]), "accept must be a non-empty list"),
        (lambda s: s["snapshot"].pop("me"), "bad snapshot"),
        (lambda s: s["snapshot"]["me"].update(role="sniper"), "role 'sniper'"),
        (lambda s: s["snapshot"]["me"].update(x=6, y=6), "stands on a wall"),
        (lambda s: s["snapshot"]["me"].update(in_cover=True), "in_cover"),
        (lambda s: s["snapshot"]["enemies"][0].update(dist=2.0), "enemy 91: dist 2.0"),
        (lambda s: s["snapshot"]["allies"][0].update(id=91), "id used twice"),
        (lambda s: s.update(accept=[{"action": "Fly"}]), "unknown action 'Fly'"),
        (lambda s: s.update(accept=[{"action": "Attack", "targets": [92]}]), "target 92"),
        (lambda s: s.update(accept=[{"action": "Heal", "targets": [91]}]), "target 91"),
        (lambda s: s.update(accept=[{"action": "Reload", "targets": [91]}]), "takes no target"),
        (lambda s: s.update(accept=[{"action": "Reload", "toward": [1, 1]}]), "takes no cell"),
        (lambda s: s.update(accept=[{"action": "MoveTo", "toward": [1]}]), "toward must be"),
        (lambda s: s.update(accept=[{"action": "Attack", "why": 1}]), "unknown keys ['why']"),
        (lambda s: s.update(accept=[{"action": "Attack", "targets": [True]}]), "list of ids"),
    ],
)
def test_bad_scenario_names_file_and_scenario(mutate: Any, words: str) -> None:
    item = _bad(mutate)
    with pytest.raises(ConfigError) as info:
        _parse(item, source="mine.json")
    message = str(info.value)
    assert message.startswith(f"mine.json: scenario {item['name']!r}: "), message
    assert words in message


def test_heal_on_oneself_is_a_legal_target() -> None:
    (s,) = _parse(_scenario(accept=[{"action": "Heal", "targets": [7]}]))
    assert s.accept[0].targets == frozenset({7})


def test_a_file_that_is_not_a_suite_is_refused_by_name(tmp_path: Path) -> None:
    for text, words in [
        (b"{not json", "not JSON"),
        (b'{"items": []}', 'one key, "scenarios"'),
        (b'{"scenarios": []}', "non-empty list"),
        (b'{"scenarios": [3]}', "item 0: a scenario must be an object"),
    ]:
        path = tmp_path / "odd.json"
        path.write_bytes(text)
        with pytest.raises(ConfigError, match=f"^odd.json: .*{words}"):
            load_scenarios([path])


def test_a_name_used_twice_is_refused_within_and_across_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="used twice in this file"):
        _parse(_scenario(), copy.deepcopy(_scenario()))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for p in (a, b):
        p.write_bytes(orjson.dumps({"scenarios": [_scenario()]}))
    with pytest.raises(
        ConfigError, match=r"^b.json: scenario 'probe': name already used in a.json"
    ):
        load_scenarios([a, b])


def test_load_keeps_file_order_and_source(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_bytes(orjson.dumps({"scenarios": [_scenario(name="one")]}))
    b.write_bytes(orjson.dumps({"scenarios": [_scenario(name="two"), _scenario(name="three")]}))
    got = load_scenarios([b, a])
    assert [(s.name, s.source) for s in got] == [
        ("two", "b.json"),
        ("three", "b.json"),
        ("one", "a.json"),
    ]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^gone.json: cannot read"):
        load_scenarios([tmp_path / "gone.json"])


def test_toward_applies_to_a_place_argument_of_a_games_own_action() -> None:
    registry = ActionRegistry(
        [
            ActionSpec("Go", "G", (ArgSpec("to", ArgKind.PLACE),), "go to a place"),
            ActionSpec("Rest", "R", (), "rest"),
        ]
    )
    (s,) = parse_scenarios(
        {"scenarios": [_scenario(accept=[{"action": "Go", "toward": [20, 8]}])]},
        "game.json",
        registry=registry,
    )
    assert s.judge(Plan((Step("Go", (pack_cell(8, 8),)),))).sensible
    assert not s.judge(Plan((Step("Go", (pack_cell(2, 7),)),))).sensible
    assert not s.judge(Plan((Step("Rest"),))).action_ok


def test_shipped_ids_are_relabelled_per_scenario() -> None:
    suite = load_scenarios()
    for s in suite:
        snap = s.snapshot
        ids = [snap.me.id, *(u.id for u in snap.enemies), *(u.id for u in snap.allies)]
        # Three digits: never the prompts' two-digit example ids, nor the ids as written.
        assert all(100 <= i < 1000 for i in ids), (s.name, ids)
    assert len({s.snapshot.me.id for s in suite}) > len(suite) // 2
