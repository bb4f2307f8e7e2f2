"""The demo's game logic, with no window: an esper world of two squads planned by aiplanner.

:class:`Game` builds the world in the *current* esper world (the caller picks it), spawns both
squads from a seeded ``random.Random``, installs the :class:`aiplanner.PlannerPlugin` and the
demo's round logic, and advances it by a fixed step. Drawing and input live in
:mod:`demo_game.render`, which adds its processors through :meth:`Game.add_ui_processor`.

Processor order in one ``esper.process(dt)`` (higher priority runs first)::

    InputProcessor      INPUT_PRIORITY      keys -> Game.apply / view toggles       (render.py)
    SnapshotSystem      aiplanner.SNAPSHOT_PRIORITY    spatial index, snapshots
    PlanningSystem      aiplanner.PLANNING_PRIORITY    batches, applies plans
    ActionExecutionSystem aiplanner.EXECUTION_PRIORITY moves, shoots, heals, deletes the dead
    RoundProcessor      ROUND_PRIORITY      elimination / objective hold, winner, restart
    RenderProcessor     RENDER_PRIORITY     map, agents, step labels, tier colours  (render.py)
    HudProcessor        HUD_PRIORITY        metrics panel, banner, help overlay      (render.py)

Input comes first so a key pressed this frame is seen by the planner this frame (``plugin.tune``
takes effect on the next batch); the round logic runs after execution so it judges the state the
frame ends in; drawing runs last so it shows that same state.
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

import esper
import orjson

import aiplanner
from aiplanner.actions import Plan
from aiplanner.components import (
    ActionQueue,
    Agent,
    Ammo,
    Health,
    Perception,
    PlanState,
    Position,
    Team,
    Tier,
    Weapon,
)
from aiplanner.config import PlannerConfig
from demo_game.maps import MapSpec, load_map

if TYPE_CHECKING:
    from aiplanner.backends.base import Backend

__all__ = [
    "BATCH_SIZES",
    "DT",
    "HUD_PRIORITY",
    "INPUT_PRIORITY",
    "MAX_SQUAD_SIZE",
    "RENDER_PRIORITY",
    "ROLE_STATS",
    "ROUND_PRIORITY",
    "TEAM_NAMES",
    "WAIT_STEPS_MS",
    "Command",
    "Game",
    "GameSettings",
    "RoleStats",
    "RoundProcessor",
    "RoundState",
]

DT: Final = 1.0 / 30.0
"""The fixed simulation step (seconds): runs are reproducible whatever the real frame rate."""

MAX_SQUAD_SIZE: Final = 64
_EPS: Final = 1e-9  # N frames of DT add up to a hair less than N * DT
TEAM_NAMES: Final = ("A", "B")

INPUT_PRIORITY: Final[int] = aiplanner.SNAPSHOT_PRIORITY + 10
ROUND_PRIORITY: Final[int] = aiplanner.EXECUTION_PRIORITY - 10
RENDER_PRIORITY: Final[int] = aiplanner.EXECUTION_PRIORITY - 20
HUD_PRIORITY: Final[int] = aiplanner.EXECUTION_PRIORITY - 30

# The live-tuning keys walk these ladders: one press is a step a human can see the effect of.
BATCH_SIZES: Final = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 256)
WAIT_STEPS_MS: Final = (0.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0, 1000.0)


@dataclass(frozen=True, slots=True)
class RoleStats:
    """What a role's NPC is made of."""

    hp: int
    speed: float
    perception: float
    range: float
    damage: int
    cooldown: float
    magazine: int
    heal: int


ROLE_STATS: Final[Mapping[str, RoleStats]] = MappingProxyType(
    {
        "tactical": RoleStats(
            hp=100,
            speed=3.0,
            perception=8.0,
            range=6.0,
            damage=20,
            cooldown=0.5,
            magazine=6,
            heal=15,
        ),
        "stealth": RoleStats(
            hp=80,
            speed=3.6,
            perception=9.0,
            range=7.0,
            damage=28,
            cooldown=0.8,
            magazine=4,
            heal=10,
        ),
        "support": RoleStats(
            hp=90,
            speed=3.0,
            perception=8.0,
            range=5.0,
            damage=12,
            cooldown=0.4,
            magazine=8,
            heal=30,
        ),
        "exploration": RoleStats(
            hp=80,
            speed=4.0,
            perception=10.0,
            range=5.5,
            damage=15,
            cooldown=0.5,
            magazine=6,
            heal=15,
        ),
    }
)
_DEFAULT_STATS: Final = ROLE_STATS["tactical"]


class Command(enum.Enum):
    """What the player can ask of the game (keys map onto these in :mod:`demo_game.render`)."""

    BATCH_UP = "batch_up"
    BATCH_DOWN = "batch_down"
    WAIT_UP = "wait_up"
    WAIT_DOWN = "wait_down"
    NEXT_STRATEGY = "next_strategy"
    TOGGLE_CACHE = "toggle_cache"
    PAUSE = "pause"
    STEP = "step"
    RESTART = "restart"


@dataclass(frozen=True, slots=True)
class GameSettings:
    """How to set a game up. Raises ``ValueError`` for an out-of-range value."""

    map_name: str = "crossroads"
    squad_size: int = 5
    seed: int = 0
    intermission_s: float = 3.0

    def __post_init__(self) -> None:
        if not 1 <= self.squad_size <= MAX_SQUAD_SIZE:
            raise ValueError(f"squad size must be 1..{MAX_SQUAD_SIZE}, got {self.squad_size}")
        if self.intermission_s < 0:
            raise ValueError(f"intermission_s must be >= 0, got {self.intermission_s}")


@dataclass(slots=True)
class RoundState:
    """The round in progress. ``winner`` is a team index, -1 for a draw, None while fighting."""

    number: int = 1
    winner: int | None = None
    reason: str = ""
    alive: list[int] = field(default_factory=lambda: [0, 0])
    hold_team: int | None = None
    hold_s: float = 0.0
    over_s: float = 0.0
    scores: list[int] = field(default_factory=lambda: [0, 0])
    restart_requested: bool = False


class RoundProcessor(esper.Processor):
    """Decides the round: a squad eliminated, or the objective held alone long enough.

    A team holds the objective while it has living agents within ``objective_radius`` cells and
    the other team has none there. After a win the game goes on for ``intermission_s`` with the
    banner shown, then ``restart`` builds the next round. With ``dt == 0`` (paused) only a
    requested restart is carried out and nothing is timed.
    """

    def __init__(
        self,
        state: RoundState,
        spec: MapSpec,
        restart: Callable[[], None],
        intermission_s: float,
    ) -> None:
        self.state = state
        self._objective = spec.objective
        self._radius2 = float(spec.objective_radius) ** 2
        self._hold_needed = spec.hold_seconds
        self._restart = restart
        self._intermission = intermission_s

    def process(self, dt: float) -> None:
        st = self.state
        if st.restart_requested:
            self._restart()
            return
        alive = [0, 0]
        present = [0, 0]
        ox, oy = self._objective
        for ent, (_, pos, health, team) in esper.get_components(Agent, Position, Health, Team):
            if health.hp <= 0 or not esper.entity_exists(ent) or team.team not in (0, 1):
                continue
            alive[team.team] += 1
            if (pos.x - ox) ** 2 + (pos.y - oy) ** 2 <= self._radius2:
                present[team.team] += 1
        st.alive = alive
        if st.winner is not None:
            if dt > 0:
                st.over_s += dt
                if st.over_s >= self._intermission - _EPS:
                    self._restart()
            return
        if alive[0] == 0 or alive[1] == 0:
            if alive[0] == alive[1]:
                self._finish(-1, "both squads eliminated")
            else:
                winner = 0 if alive[0] else 1
                self._finish(winner, f"team {TEAM_NAMES[1 - winner]} eliminated")
            return
        holder: int | None = None
        if present[0] and not present[1]:
            holder = 0
        elif present[1] and not present[0]:
            holder = 1
        if holder != st.hold_team:
            st.hold_team = holder
            st.hold_s = 0.0
        if holder is not None and dt > 0:
            st.hold_s += dt
            if st.hold_s >= self._hold_needed - _EPS:
                self._finish(holder, f"held the objective for {self._hold_needed:g}s")

    def _finish(self, winner: int, reason: str) -> None:
        st = self.state
        st.winner = winner
        st.reason = reason
        st.over_s = 0.0
        if winner >= 0:
            st.scores[winner] += 1


class Game:
    """Two squads on one map, planned by aiplanner, in the current esper world.

    ``replay`` (tick -> [(entity, plan, tier)]) makes the planner apply exactly those plans at
    those ticks and nothing else. ``virtual_clock`` gives the plugin a clock that advances by the
    fixed step per frame instead of wall time (reproducible runs with ``lockstep``).
    ``on_plan_applied`` is called as ``(entity, plan, tier, tick)`` for every applied plan; the
    game keeps it alive, since esper holds event handlers weakly.

    Raises :class:`demo_game.maps.MapError` for a bad map, ``aiplanner.ConfigError`` for a bad
    planner configuration.
    """

    def __init__(
        self,
        settings: GameSettings,
        *,
        config: PlannerConfig | None = None,
        backend: Backend | None = None,
        replay: Mapping[int, Sequence[tuple[int, Plan, Tier]]] | None = None,
        virtual_clock: bool = False,
        on_plan_applied: Callable[[int, Plan, Tier, int], None] | None = None,
        spec: MapSpec | None = None,
    ) -> None:
        self.settings = settings
        self.spec = spec if spec is not None else load_map(settings.map_name)
        self.round = RoundState()
        self.tick = 0
        self.sim_time = 0.0
        self.paused = False
        self.plans_applied = 0
        self._step_once = False
        self._closed = False
        self._world = esper.current_world
        self._rng = random.Random(settings.seed)
        self._ui: list[tuple[int, esper.Processor]] = []
        self._on_plan_applied = on_plan_applied
        self._roles = (config or PlannerConfig()).roles

        esper.create_entity(self.spec.battlefield())
        self._spawn_squads()
        self.plugin = aiplanner.PlannerPlugin(
            config if config is not None else PlannerConfig(seed=settings.seed),
            backend,
            clock=self._sim_clock if virtual_clock else None,
            replay=replay,
        )
        self.plugin.install()
        # esper holds handlers weakly: a bound method of this game lives exactly as long as it.
        esper.set_handler(aiplanner.EVENT_PLAN_APPLIED, self._plan_applied)
        self.round_processor = RoundProcessor(
            self.round, self.spec, self.restart_round, settings.intermission_s
        )
        self.add_ui_processor(self.round_processor, ROUND_PRIORITY)

    # -- the frame -------------------------------------------------------------------------------
    def process(self, dt: float = DT) -> bool:
        """Run one frame: ``esper.process(dt)`` with every processor in priority order.

        While paused only the processors added with :meth:`add_ui_processor` run (with ``dt=0``),
        so input, drawing and restarts still work and the world holds still; a STEP command lets
        exactly one full frame through. Returns whether the world advanced.
        """
        if self.paused and not self._step_once:
            for _, proc in self._ui:
                proc.process(0.0)
            return False
        self._step_once = False
        # The plugin reads the clock inside esper.process: move it first.
        self.sim_time += dt
        esper.process(dt)
        self.tick += 1
        return True

    def run(self, frames: int, dt: float = DT) -> None:
        """Advance ``frames`` frames (headless)."""
        for _ in range(frames):
            self.process(dt)

    def add_ui_processor(self, processor: esper.Processor, priority: int) -> None:
        """Add a processor that also runs while paused (input, round logic, drawing)."""
        esper.add_processor(processor, priority=priority)
        self._ui.append((priority, processor))
        self._ui.sort(key=lambda p: -p[0])

    # -- commands ---------------------------------------------------------------------------------
    def apply(self, command: Command) -> str:
        """Carry out a player command; returns a short message for the HUD.

        Planner settings go through ``plugin.tune`` (the next batch uses them).
        """
        cfg = self.plugin.config
        if command is Command.BATCH_UP:
            size = _step(BATCH_SIZES, cfg.max_batch_size, +1)
            self.plugin.tune(max_batch_size=size)
            return f"batch size {size}"
        if command is Command.BATCH_DOWN:
            size = _step(BATCH_SIZES, cfg.max_batch_size, -1)
            self.plugin.tune(max_batch_size=size)
            return f"batch size {size}"
        if command is Command.WAIT_UP:
            wait = _step(WAIT_STEPS_MS, cfg.max_wait_ms, +1)
            self.plugin.tune(max_wait_ms=wait)
            return f"max wait {wait:g} ms"
        if command is Command.WAIT_DOWN:
            wait = _step(WAIT_STEPS_MS, cfg.max_wait_ms, -1)
            self.plugin.tune(max_wait_ms=wait)
            return f"max wait {wait:g} ms"
        if command is Command.NEXT_STRATEGY:
            names = tuple(aiplanner.STRATEGIES)
            at = names.index(cfg.strategy) if cfg.strategy in names else -1
            nxt = names[(at + 1) % len(names)]
            self.plugin.tune(strategy=nxt)
            return f"strategy {nxt}"
        if command is Command.TOGGLE_CACHE:
            self.plugin.tune(cache_enabled=not cfg.cache_enabled)
            return f"cache {'on' if not cfg.cache_enabled else 'off'}"
        if command is Command.PAUSE:
            self.paused = not self.paused
            return "paused" if self.paused else "running"
        if command is Command.STEP:
            if not self.paused:
                return "step works while paused"
            self._step_once = True
            return f"step to tick {self.tick + 1}"
        if command is Command.RESTART:
            self.round.restart_requested = True
            return "restart"
        raise ValueError(f"unknown command {command!r}")

    def restart_round(self) -> None:
        """Remove every agent and spawn both squads again (new entity ids, same RNG stream)."""
        for ent, _ in esper.get_component(Agent):
            if esper.entity_exists(ent):
                esper.delete_entity(ent)
        st = self.round
        st.number += 1
        st.winner = None
        st.reason = ""
        st.hold_team = None
        st.hold_s = 0.0
        st.over_s = 0.0
        st.restart_requested = False
        self._spawn_squads()

    # -- state ------------------------------------------------------------------------------------
    def agents(self) -> list[tuple[int, Team, Position, Health]]:
        """Living agents, by entity id."""
        out = [
            (ent, team, pos, health)
            for ent, (_, team, pos, health) in esper.get_components(Agent, Team, Position, Health)
            if esper.entity_exists(ent)
        ]
        out.sort(key=lambda a: a[0])
        return out

    def digest(self) -> str:
        """A SHA-256 over the world state: every living agent and the round.

        Two runs that end in the same state have the same digest (floats are serialised exactly).
        """
        agents: list[tuple[object, ...]] = []
        for ent, (agent, team, pos, health) in esper.get_components(Agent, Team, Position, Health):
            rest = esper.try_components(ent, Ammo, ActionQueue)
            if rest is None or not esper.entity_exists(ent):
                continue
            ammo, queue = rest
            steps = [[s.action, list(s.args)] for s in queue.steps]
            agents.append(
                (
                    ent,
                    team.team,
                    agent.role,
                    pos.x,
                    pos.y,
                    health.hp,
                    ammo.rounds,
                    queue.index,
                    queue.progress,
                    steps,
                )
            )
        agents.sort(key=lambda a: a[0])  # type: ignore[arg-type, return-value]
        st = self.round
        doc = {
            "tick": self.tick,
            "round": [st.number, st.winner, st.scores, st.hold_team, st.hold_s],
            "agents": agents,
        }
        return hashlib.sha256(orjson.dumps(doc)).hexdigest()

    def stats(self) -> dict[str, object]:
        return dict(self.plugin.stats())

    def close(self) -> None:
        """Close the plugin (stops its worker thread) and remove the game's processors from the
        world it was built in. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        # esper 3.9's remove_handler silently keeps bound methods: _plan_applied checks _closed.
        esper.remove_handler(aiplanner.EVENT_PLAN_APPLIED, self._plan_applied)
        current = esper.current_world
        if self._world != current and self._world in esper.list_worlds():
            esper.switch_world(self._world)
        try:
            for _, proc in self._ui:
                # esper removes processors by type: only remove the one that is ours.
                if esper.get_processor(type(proc)) is proc:
                    esper.remove_processor(type(proc))
            self._ui.clear()
            self.plugin.close()
        finally:
            if esper.current_world != current:
                esper.switch_world(current)

    def __enter__(self) -> Game:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------
    def _sim_clock(self) -> float:
        return self.sim_time

    def _plan_applied(self, entity: int, plan: Plan, tier: Tier, tick: int) -> None:
        if self._closed:
            return
        self.plans_applied += 1
        if self._on_plan_applied is not None:
            self._on_plan_applied(entity, plan, tier, tick)

    def _spawn_squads(self) -> None:
        """Spawn both squads; every random choice comes from the game's seeded RNG."""
        n = self.settings.squad_size
        for team in (0, 1):
            cells = list(self.spec.spawns[team])
            self._rng.shuffle(cells)
            # Roles cycle so every squad is mixed; the RNG picks where the cycle starts.
            first = self._rng.randrange(len(self._roles))
            for i in range(n):
                x, y = cells[i % len(cells)]
                role = self._roles[(first + i) % len(self._roles)]
                self._spawn(team, role, float(x), float(y))

    def _spawn(self, team: int, role: str, x: float, y: float) -> int:
        s = ROLE_STATS.get(role, _DEFAULT_STATS)
        return esper.create_entity(
            Agent(role=role, speed=s.speed),
            Position(x, y),
            Health(hp=s.hp, max_hp=s.hp),
            Ammo(rounds=s.magazine, capacity=s.magazine),
            Team(team=team),
            Perception(radius=s.perception),
            Weapon(range=s.range, damage=s.damage, cooldown=s.cooldown, heal_amount=s.heal),
            ActionQueue(),
            PlanState(),
        )


def _step(ladder: Sequence[float], current: float, direction: int) -> int | float:
    """The next ladder value above (direction > 0) or below ``current``; stays at the ends."""
    if direction > 0:
        bigger = [v for v in ladder if v > current]
        return bigger[0] if bigger else ladder[-1]
    smaller = [v for v in ladder if v < current]
    return smaller[-1] if smaller else ladder[0]
