"""A/B battle: one squad planned by the model (guided), the other by the rules alone.

``python -m demo_game.ab_battle --seeds 20`` plays one headless, seeded, lockstep round per seed
on the demo's map and prints the model squad's win rate and the damage ratio. The model squad
changes sides every seed, so neither gets the better spawn more often. Lockstep makes every tick
wait for the model's answers (the figures measure decisions, not speed), and the virtual clock
makes each seed's round the same on every run. Provisional plans are off, so both squads go
through the same motions and differ only in who decides.

``--planner teacher`` gives the "model" squad to the outcome teacher instead
(:mod:`aiplanner.training.teacher_backend`): each of its decisions rolls out the rules'
candidates in the world the agent's snapshot describes and takes the best (``--horizon-s``,
``--weights``, ``--round-rules``: the teacher's settings), through the same pipeline, lockstep
and one-tick delivery as the model. It measures a labelling teacher by the rounds it wins.

``--realtime`` plays the live game instead: the wall clock at 30 frames a second, provisional
plans (the rules' plan runs while the model decides), the default plan deadline and the frames'
idle time for planning, as the demo runs. The model's answers arrive when they arrive, so the
result counts its speed as well as its decisions, and no two runs are the same. With
``--control`` the scripted "model" answers after 0.2-2 s, about the model's latency in the demo.

Damage is counted from health: a squad's damage taken is its total health at the start minus its
living members' health at the end (dead members count their whole health), heals included.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import esper
import orjson

from aiplanner.backends.base import Backend
from aiplanner.components import Agent, Health, Team
from aiplanner.config import PlannerConfig
from aiplanner.training.teacher import (
    OutcomeTeacher,
    add_teacher_arguments,
    save_labels,
    teacher_config_from,
)
from aiplanner.training.teacher_backend import SERVER_PRIORITY, TeacherBackend, TeacherServer
from demo_game.app import LOAD_TIMEOUT_S
from demo_game.game import DT, Game, GameSettings

__all__ = ["BattleResult", "Summary", "main", "play", "summarise"]

_WORLD = "demo_game_ab"
_REALTIME_RESERVE_MS = 2.0  # of each real-time frame, kept from the planner's idle-time work
_REALTIME_CONTROL_LATENCY_S = (0.2, 2.0)  # the control's answers in real time, about the model's
_LOCKSTEP_TIMEOUT_S = 600.0
"""How long a tick waits for the model, and the wall-clock budget of each plan: long enough
that a loaded machine cannot make the rules fill in for a slow answer (measured: under load 11,
3-agent scoring calls ran past the default 4 s budget and the model squad got 0-7 model plans a
round instead of 5-17, so the result depended on the load). Answers still arrive on the next
tick, so the game is the same."""


@dataclass(frozen=True, slots=True)
class BattleResult:
    """One seed: which team the model planned, who won (-1: draw or time up), damage taken."""

    seed: int
    model_team: int
    winner: int
    reason: str
    seconds: float
    damage_to_model: int
    damage_to_rules: int
    model_plans: int
    decisions: int
    agree_rate: float | None

    @property
    def model_won(self) -> bool:
        return self.winner == self.model_team


@dataclass(frozen=True, slots=True)
class Summary:
    rounds: int
    model_wins: int
    rules_wins: int
    draws: int
    damage_ratio: float | None  # damage dealt by the model squad / damage dealt by the rules squad

    @property
    def win_rate(self) -> float:
        return self.model_wins / self.rounds if self.rounds else 0.0


def play(
    seed: int,
    backend: Backend,
    *,
    squad_size: int = 3,
    max_seconds: float = 60.0,
    map_name: str = "crossroads",
    config: PlannerConfig | None = None,
    setup: Callable[[Game], None] | None = None,
    realtime: bool = False,
) -> BattleResult:
    """Play one round for ``seed`` in a fresh esper world; the model plans team ``seed % 2``.

    ``setup(game)`` runs once the game is built, in its world (e.g. to add a processor).
    ``realtime``: the live game instead of lockstep: the wall clock at 30 frames a second, the
    frames' idle time for planning, as the demo runs; the model's answers arrive when they
    arrive, so the round counts its speed too and is not the same run to run."""
    model_team = seed % 2
    base = config if config is not None else PlannerConfig()
    if realtime:
        # The live game's planning for the model squad: no lockstep, provisional plans on (the
        # rules' plan runs while the model decides), the default plan deadline.
        cfg = dataclasses.replace(base, seed=seed, model_teams=(model_team,))
    else:
        # No provisional plans: the rules' squad gets its plans at once, and a squad that runs
        # the rules' plan and then restarts it when the model's arrives plays differently even
        # when the model agrees (measured: a model squad that always takes the rules' first
        # choice wins 12 of 20 with them, 11 of 20 without; damage ratio 1.40 against 1.02).
        # Lockstep already makes the model's answer arrive on the next tick.
        cfg = dataclasses.replace(
            base,
            seed=seed,
            lockstep=True,
            lockstep_timeout_s=_LOCKSTEP_TIMEOUT_S,
            plan_deadline_s=_LOCKSTEP_TIMEOUT_S,
            provisional=False,
            model_teams=(model_team,),
        )
    previous = esper.current_world
    esper.switch_world(_WORLD)
    try:
        game = Game(
            GameSettings(map_name=map_name, squad_size=squad_size, seed=seed, intermission_s=60.0),
            config=cfg,
            backend=backend,
            virtual_clock=not realtime,
        )
        try:
            if setup is not None:
                setup(game)
            start = _health_by_team()
            frames = round(max_seconds / DT)
            next_frame = time.perf_counter()
            for _ in range(frames):
                game.process(DT)
                if game.round.winner is not None:
                    break
                if realtime:
                    next_frame = _rest_of_frame(game, next_frame + DT)
            end = _health_by_team()
            stats = game.plugin.stats()
            tiers = stats.get("tiers", {})
            model_plans = int(tiers.get("llm", 0)) if isinstance(tiers, dict) else 0
            decisions = stats.get("decisions", 0)
            agree = stats.get("agree_rate")
            winner = game.round.winner if game.round.winner is not None else -1
            return BattleResult(
                seed=seed,
                model_team=model_team,
                winner=winner,
                reason=game.round.reason or "time up",
                seconds=round(game.sim_time, 2),
                damage_to_model=start[model_team] - end.get(model_team, 0),
                damage_to_rules=start[1 - model_team] - end.get(1 - model_team, 0),
                model_plans=model_plans,
                decisions=decisions if isinstance(decisions, int) else 0,
                agree_rate=agree if isinstance(agree, float) else None,
            )
        finally:
            game.plugin.uninstall()
    finally:
        esper.switch_world(previous)
        esper.delete_world(_WORLD)


def _rest_of_frame(game: Game, frame_end: float) -> float:
    """A real-time frame's idle time, as the demo spends it: planning that waits (up to the
    frame's end less a reserve), then sleep until ``frame_end``, which it returns."""
    idle_ms = (frame_end - time.perf_counter()) * 1000.0 - _REALTIME_RESERVE_MS
    if idle_ms > 0:
        game.plugin.between_frames(idle_ms)
    time.sleep(max(0.0, frame_end - time.perf_counter()))
    return frame_end


def _health_by_team() -> dict[int, int]:
    out: dict[int, int] = {}
    for _, (_, health, team) in esper.get_components(Agent, Health, Team):
        out[team.team] = out.get(team.team, 0) + max(0, health.hp)
    return out


def summarise(results: Sequence[BattleResult]) -> Summary:
    dealt_by_model = sum(r.damage_to_rules for r in results)
    dealt_by_rules = sum(r.damage_to_model for r in results)
    return Summary(
        rounds=len(results),
        model_wins=sum(r.model_won for r in results),
        rules_wins=sum(r.winner == 1 - r.model_team for r in results),
        draws=sum(r.winner == -1 for r in results),
        damage_ratio=dealt_by_model / dealt_by_rules if dealt_by_rules else None,
    )


def main(
    argv: Sequence[str] | None = None, make_backend: Callable[[], Backend] | None = None
) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo_game.ab_battle", description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--squad", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0, help="round time limit")
    parser.add_argument("--map", default="crossroads")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rank-prior", type=float, default=None)
    parser.add_argument("--decision", choices=("score", "generate"), default="score")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument(
        "--control",
        action="store_true",
        help="the baseline: a 'model' that always takes the rules' first choice, through the "
        "same pipeline (scripted scores), to show what the harness itself gives either side",
    )
    parser.add_argument(
        "--planner",
        choices=("model", "teacher"),
        default="model",
        help="who plans the 'model' squad: the model (default) or the outcome teacher's rollouts",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="the live game instead of lockstep: wall clock at 30 fps, provisional plans, the "
        "default plan deadline, late answers left to the rules (the model's speed counts too; "
        "with --control the scripted answers take 0.2-2 s)",
    )
    add_teacher_arguments(parser)
    parser.add_argument(
        "--labels-out",
        type=Path,
        help="with --planner teacher: write each decision as a labelled situation (JSON lines, "
        "for python -m aiplanner train --labels)",
    )
    args = parser.parse_args(argv)
    if args.realtime and args.planner == "teacher":
        parser.error("--realtime is for the model or --control: the teacher is served lockstep")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    setup: Callable[[Game], None] | None = None
    changes: dict[str, object] = {"guided_decision": args.decision}
    if args.planner == "teacher":
        teacher_backend = TeacherBackend(
            OutcomeTeacher(teacher_config_from(args)), keep_labels=args.labels_out is not None
        )
        backend: Backend = teacher_backend
        changes.update(rank_prior=0.0, calibrated=False, guided_decision="score")

        def setup(game: Game) -> None:
            plugin = game.plugin
            server = TeacherServer(teacher_backend, lambda: plugin.backend_busy)
            esper.add_processor(server, priority=SERVER_PRIORITY)

    elif make_backend is None and args.control:
        from aiplanner.backends.scripted import ScriptedBackend

        backend = (
            ScriptedBackend(latency_s=_REALTIME_CONTROL_LATENCY_S, seed=0, scoring=True)
            if args.realtime
            else ScriptedBackend(virtual_time=True, scoring=True)
        )
    elif make_backend is None:
        from aiplanner.backends.embedded import EmbeddedBackend

        backend = EmbeddedBackend(n_threads=args.threads)
        if args.realtime:  # loaded before the first round, as the demo does
            backend.load_sync(timeout_s=LOAD_TIMEOUT_S)
    else:
        backend = make_backend()
    if args.rank_prior is not None:
        changes["rank_prior"] = args.rank_prior
    config = PlannerConfig(**changes)  # type: ignore[arg-type]
    results: list[BattleResult] = []
    print("seed model_team winner   dmg_to_model dmg_to_rules llm_plans agree  reason")
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        r = play(
            seed,
            backend,
            squad_size=args.squad,
            max_seconds=args.seconds,
            map_name=args.map,
            config=config,
            setup=setup,
            realtime=args.realtime,
        )
        results.append(r)
        agree = "-" if r.agree_rate is None else f"{r.agree_rate:.0%}"
        who = "model" if r.model_won else ("draw" if r.winner == -1 else "rules")
        print(
            f"{r.seed:4d} {r.model_team:10d} {who:8s} {r.damage_to_model:12d} "
            f"{r.damage_to_rules:12d} {r.model_plans:9d} {agree:>5s}  {r.reason}",
            flush=True,
        )
    s = summarise(results)
    ratio = "-" if s.damage_ratio is None else f"{s.damage_ratio:.2f}"
    print(
        f"\nmodel squad: {s.model_wins} wins, {s.rules_wins} losses, {s.draws} draws of "
        f"{s.rounds} ({s.win_rate:.0%}); damage dealt model/rules = {ratio}"
    )
    if args.planner == "teacher":
        print(
            f"teacher: {teacher_backend.decided} decisions by rollout, {teacher_backend.failed} "
            f"snapshots that made no legal world (the rules' first candidate played)"
        )
        if args.labels_out is not None:
            digest = save_labels(args.labels_out, teacher_backend.labels)
            print(f"{len(teacher_backend.labels)} labels -> {args.labels_out} (sha256 {digest})")
        ranks = teacher_backend.positions
        acts = teacher_backend.actions
        print(
            "teacher's choices by rules' rank: "
            + " ".join(f"{k}:{ranks[k]}" for k in sorted(ranks))
            + " | by first action: "
            + " ".join(f"{a}:{n}" for a, n in acts.most_common())
        )
    if args.json:
        data = {
            "results": [dataclasses.asdict(r) for r in results],
            "summary": {**dataclasses.asdict(s), "win_rate": s.win_rate},
        }
        with open(args.json, "wb") as f:
            f.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    anyio.run(backend.aclose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
