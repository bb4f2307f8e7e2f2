"""The game without a window: spawning, a scripted battle, rounds, commands, pause and step."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import esper
import pytest

import aiplanner
from aiplanner.components import Agent, Health, Position, Team, Tier
from demo_game.game import (
    BATCH_SIZES,
    DT,
    ROUND_PRIORITY,
    WAIT_STEPS_MS,
    Command,
    Game,
    GameSettings,
    RoundProcessor,
    RoundState,
)
from demo_game.maps import load_map

GameFactory = Callable[..., Game]


def _positions() -> dict[int, tuple[float, float]]:
    return {e: (p.x, p.y) for e, (_, p) in esper.get_components(Agent, Position)}


def test_spawns_two_mixed_squads_on_their_spawn_cells(make_game: GameFactory) -> None:
    game = make_game(squad_size=6)
    agents = game.agents()
    assert len(agents) == 12
    for team in (0, 1):
        cells = set(game.spec.spawns[team])
        mine = [(e, p) for e, t, p, _ in agents if t.team == team]
        assert len(mine) == 6
        assert all((int(p.x), int(p.y)) in cells for _, p in mine)
        roles = Counter(esper.component_for_entity(e, Agent).role for e, _ in mine)
        assert len(roles) == len(aiplanner.ROLES)  # 6 agents over 4 roles: every role present


def test_spawns_come_from_the_seed(make_game: GameFactory) -> None:
    a = make_game(seed=1)
    first = _positions()
    a.close()
    esper.clear_database()
    make_game(seed=1)
    assert _positions() == first
    esper.clear_database()
    make_game(seed=2)
    assert _positions() != first


@pytest.mark.parametrize("size", [0, 65])
def test_squad_size_is_bounded(size: int) -> None:
    with pytest.raises(ValueError, match="squad size"):
        GameSettings(squad_size=size)


def test_fifty_per_squad_fit(make_game: GameFactory) -> None:
    game = make_game(squad_size=50, scripted=False)
    game.run(3)
    assert len(game.agents()) == 100


def test_scripted_battle_moves_fights_and_applies_plans(make_game: GameFactory) -> None:
    tiers: Counter[Tier] = Counter()

    def seen(entity: int, plan: aiplanner.Plan, tier: Tier, tick: int) -> None:
        tiers[tier] += 1

    game = make_game(squad_size=4, on_plan_applied=seen)
    start = _positions()
    game.run(240)
    assert game.tick == 240
    assert game.plans_applied > 0 and tiers[Tier.LLM] > 0
    now = _positions()
    moved = [e for e in start if e in now and now[e] != start[e]]
    assert moved
    hurt = [e for e, _, _, h in game.agents() if h.hp < h.max_hp]
    died = [e for e in start if e not in now]
    assert hurt or died  # someone was shot
    stats = game.stats()
    assert isinstance(stats["tiers"], dict) and sum(stats["tiers"].values()) == game.plans_applied


def test_same_seed_same_final_state(make_game: GameFactory) -> None:
    game = make_game(seed=5)
    game.run(120)
    first = game.digest()
    game.close()
    esper.clear_database()
    again = make_game(seed=5)
    again.run(120)
    assert again.digest() == first


def test_elimination_wins_the_round_then_it_restarts(make_game: GameFactory) -> None:
    game = make_game(squad_size=3, scripted=False, intermission_s=0.5)
    old = {e for e, *_ in game.agents()}
    for _, team, _, health in game.agents():
        if team.team == 1:
            health.hp = 0
    game.run(2)  # execution deletes the dead; the round processor sees team B gone
    assert game.round.winner == 0
    assert game.round.scores == [1, 0]
    assert "eliminated" in game.round.reason
    game.run(int(0.5 / DT) + 2)
    assert game.round.number == 2 and game.round.winner is None
    agents = game.agents()
    assert len(agents) == 6
    assert not old & {e for e, *_ in agents}  # a new round has new entities


def _round_world(spec_name: str = "crossroads") -> tuple[RoundProcessor, RoundState, list[int]]:
    spec = load_map(spec_name)
    state = RoundState()
    restarts: list[int] = []
    proc = RoundProcessor(state, spec, lambda: restarts.append(1), intermission_s=1.0)
    esper.add_processor(proc, priority=ROUND_PRIORITY)
    return proc, state, restarts


def _agent(team: int, x: float, y: float) -> int:
    return esper.create_entity(Agent(), Position(x, y), Health(50), Team(team))


def test_holding_the_objective_alone_wins(world: str) -> None:
    proc, state, restarts = _round_world()
    spec = load_map("crossroads")
    ox, oy = spec.objective
    _agent(0, ox + 1, oy)
    _agent(1, 1, 1)
    frames = round(spec.hold_seconds / DT)
    for _ in range(frames - 1):
        proc.process(DT)
    assert state.winner is None and state.hold_team == 0
    proc.process(DT)
    assert state.winner == 0 and "objective" in state.reason
    for _ in range(round(1.0 / DT)):
        proc.process(DT)
    assert restarts == [1]


def test_contested_or_paused_objective_does_not_count(world: str) -> None:
    proc, state, _ = _round_world()
    ox, oy = load_map("crossroads").objective
    _agent(0, ox, oy)
    enemy = _agent(1, ox - 1, oy)
    for _ in range(400):
        proc.process(DT)
    assert state.winner is None and state.hold_team is None
    esper.component_for_entity(enemy, Position).x = 1.0
    for _ in range(400):
        proc.process(0.0)  # paused: nothing is timed
    assert state.winner is None and state.hold_s == 0.0


def test_both_squads_dead_is_a_draw(world: str) -> None:
    proc, state, _ = _round_world()
    proc.process(DT)
    assert state.winner == -1 and state.scores == [0, 0]


def test_tuning_commands_go_through_the_plugin(make_game: GameFactory) -> None:
    game = make_game(scripted=False)
    cfg = game.plugin.config
    assert game.apply(Command.BATCH_UP) == f"batch size {BATCH_SIZES[BATCH_SIZES.index(8) + 1]}"
    assert game.plugin.config.max_batch_size == BATCH_SIZES[BATCH_SIZES.index(8) + 1]
    game.apply(Command.BATCH_DOWN)
    game.apply(Command.BATCH_DOWN)
    assert game.plugin.config.max_batch_size == BATCH_SIZES[BATCH_SIZES.index(8) - 1]
    for _ in range(len(BATCH_SIZES) + 2):
        game.apply(Command.BATCH_DOWN)
    assert game.plugin.config.max_batch_size == 1
    game.apply(Command.WAIT_UP)
    assert game.plugin.config.max_wait_ms == WAIT_STEPS_MS[WAIT_STEPS_MS.index(cfg.max_wait_ms) + 1]
    game.apply(Command.WAIT_DOWN)
    game.apply(Command.WAIT_DOWN)
    assert game.plugin.config.max_wait_ms < cfg.max_wait_ms
    seen = []
    for _ in aiplanner.STRATEGIES:
        game.apply(Command.NEXT_STRATEGY)
        seen.append(game.plugin.config.strategy)
    assert sorted(seen) == sorted(aiplanner.STRATEGIES) and seen[-1] == cfg.strategy
    assert game.apply(Command.TOGGLE_CACHE) == "cache off"
    assert game.plugin.config.cache_enabled is not cfg.cache_enabled
    game.apply(Command.TOGGLE_CACHE)
    assert game.plugin.config.cache_enabled is cfg.cache_enabled


def test_pause_holds_the_world_and_step_advances_one_tick(make_game: GameFactory) -> None:
    game = make_game()
    game.run(30)
    game.apply(Command.PAUSE)
    held = game.digest()
    assert game.process() is False and game.process() is False
    assert game.digest() == held and game.tick == 30
    assert game.apply(Command.STEP) == "step to tick 31"
    assert game.process() is True and game.tick == 31
    assert game.process() is False and game.tick == 31
    game.apply(Command.PAUSE)
    assert game.process() is True and game.tick == 32


def test_restart_while_paused_takes_effect_at_once(make_game: GameFactory) -> None:
    game = make_game(scripted=False)
    before = {e for e, *_ in game.agents()}
    game.apply(Command.PAUSE)
    game.apply(Command.RESTART)
    game.process()
    after = {e for e, *_ in game.agents()}
    assert game.round.number == 2 and game.tick == 0
    assert after and not before & after
