"""Everything pygame: the window's processors (input, map and agents, HUD) and the key bindings.

The processors are esper Processors added to the game's world through
:meth:`demo_game.game.Game.add_ui_processor`, so they also run while the game is paused (see the
processor order in :mod:`demo_game.game`). Fonts are pygame's default font
(``pygame.font.Font(None, size)``), which needs no font files and works with the dummy video driver.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import esper
import pygame

from aiplanner.actions import ActionRegistry, ArgKind, Step
from aiplanner.backends.base import Backend
from aiplanner.components import (
    ActionQueue,
    Health,
    PlanState,
    PlanStatus,
    Position,
    Team,
    Tier,
)
from demo_game.game import (
    HUD_PRIORITY,
    INPUT_PRIORITY,
    RENDER_PRIORITY,
    TEAM_NAMES,
    Command,
    Game,
)

__all__ = [
    "KEY_BINDINGS",
    "PANEL_WIDTH",
    "TEAM_COLORS",
    "TIER_COLORS",
    "HudProcessor",
    "InputProcessor",
    "KeyBinding",
    "RenderProcessor",
    "View",
    "ViewAction",
    "step_label",
]

Color = tuple[int, int, int]

PANEL_WIDTH: Final = 330
_MAX_WINDOW: Final = (1280, 800)
_STATS_EVERY_FRAMES: Final = 8  # plugin.stats() sorts latency windows: not every frame
_MESSAGE_FRAMES: Final = 75
_TEXT_CACHE_MAX: Final = 4096
_VALUE_CHARS: Final = 34  # what fits the panel's value column

TEAM_COLORS: Final[tuple[Color, Color]] = ((70, 130, 240), (225, 85, 70))
TIER_COLORS: Final[Mapping[Tier | None, Color]] = MappingProxyType(
    {
        Tier.LLM: (200, 90, 255),
        Tier.LLM_SIMPLE: (0, 215, 215),
        Tier.CACHE: (90, 230, 90),
        Tier.HEURISTIC: (250, 205, 40),
        Tier.EMERGENCY: (255, 80, 170),
        None: (110, 110, 110),
    }
)
_TIER_LABELS: Final[Mapping[Tier, str]] = MappingProxyType(
    {
        Tier.LLM: "LLM",
        Tier.LLM_SIMPLE: "LLM simple",
        Tier.CACHE: "cache",
        Tier.HEURISTIC: "heuristic",
        Tier.EMERGENCY: "emergency",
    }
)
_FLOOR: Final = (34, 38, 44)
_GRID: Final = (44, 49, 56)
_WALL: Final = (98, 100, 112)
_WATER: Final = (38, 78, 140)
_COVER: Final = (70, 110, 70)
_OBJECTIVE: Final = (240, 200, 60)
_PANEL: Final = (20, 22, 26)
_TEXT: Final = (225, 228, 235)
_DIM: Final = (140, 145, 155)
_ACTION_SHORT: Final[Mapping[str, str]] = MappingProxyType(
    {
        "MoveTo": "move",
        "Attack": "atk",
        "TakeCover": "cover",
        "Reload": "reload",
        "Heal": "heal",
        "Retreat": "retreat",
        "Scan": "scan",
        "Wait": "wait",
    }
)


class ViewAction(enum.Enum):
    """Keys that change only what is shown."""

    HELP = "help"
    LABELS = "labels"
    QUIT = "quit"


@dataclass(frozen=True, slots=True)
class KeyBinding:
    keys: tuple[int, ...]
    label: str
    action: Command | ViewAction
    help: str


KEY_BINDINGS: Final[tuple[KeyBinding, ...]] = (
    KeyBinding(
        (pygame.K_EQUALS, pygame.K_PLUS, pygame.K_KP_PLUS), "+", Command.BATCH_UP, "batch size up"
    ),
    KeyBinding((pygame.K_MINUS, pygame.K_KP_MINUS), "-", Command.BATCH_DOWN, "batch size down"),
    KeyBinding((pygame.K_RIGHTBRACKET,), "]", Command.WAIT_UP, "max wait up"),
    KeyBinding((pygame.K_LEFTBRACKET,), "[", Command.WAIT_DOWN, "max wait down"),
    KeyBinding((pygame.K_s,), "S", Command.NEXT_STRATEGY, "next batching strategy"),
    KeyBinding((pygame.K_c,), "C", Command.TOGGLE_CACHE, "plan cache on/off"),
    KeyBinding((pygame.K_SPACE, pygame.K_p), "Space / P", Command.PAUSE, "pause / resume"),
    KeyBinding((pygame.K_n, pygame.K_PERIOD), "N / .", Command.STEP, "step one tick (paused)"),
    KeyBinding((pygame.K_r,), "R", Command.RESTART, "restart the round"),
    KeyBinding((pygame.K_l,), "L", ViewAction.LABELS, "step labels on/off"),
    KeyBinding((pygame.K_h, pygame.K_F1), "H / F1", ViewAction.HELP, "this help"),
    KeyBinding((pygame.K_ESCAPE, pygame.K_q), "Esc / Q", ViewAction.QUIT, "quit"),
)


def step_label(step: Step | None, registry: ActionRegistry) -> str:
    """A few characters for a step: ``move 12,4``, ``atk #17``, ``reload``."""
    if step is None:
        return "-"
    spec = registry.get(step.action)
    name = _ACTION_SHORT.get(step.action, step.action[:7].lower())
    if spec is None or not step.args:
        return name
    parts: list[str] = []
    coords: list[str] = []
    for arg, value in zip(spec.args, step.args, strict=False):
        if arg.kind in (ArgKind.X, ArgKind.Y):
            coords.append(str(value))
        elif arg.kind in (ArgKind.ENEMY, ArgKind.ALLY):
            parts.append(f"#{value}")
        else:
            parts.append(str(value))
    if coords:
        parts.insert(0, ",".join(coords))
    return f"{name} {' '.join(parts)}"


class View:
    """The window's state: layout, fonts, cached text, toggles, the last frame's timing.

    ``frame_ms`` / ``fps`` are set by the main loop (they measure whole frames, drawing included).
    """

    def __init__(
        self, game: Game, screen: pygame.Surface, *, backend_name: str, show_labels: bool = True
    ) -> None:
        self.game = game
        self.screen = screen
        self.backend_name = backend_name
        self.show_labels = show_labels
        self.show_help = False
        self.quit_requested = False
        self.message = ""
        self.message_frames = 0
        self.frame_ms = 0.0
        self.fps = 0.0
        self.frames = 0
        self.stats: dict[str, object] = {}
        self.cell = cell_size(game.spec.width, game.spec.height)
        self.map_size = (game.spec.width * self.cell, game.spec.height * self.cell)
        self.small = pygame.font.Font(None, 17)
        self.medium = pygame.font.Font(None, 21)
        self.large = pygame.font.Font(None, 46)
        self._text: dict[tuple[str, Color, int], pygame.Surface] = {}
        self.background = self._draw_background()
        self._events: list[pygame.event.Event] = []

    @staticmethod
    def window_size(width: int, height: int) -> tuple[int, int]:
        """Window size for a map of ``width`` x ``height`` cells."""
        cs = cell_size(width, height)
        return width * cs + PANEL_WIDTH, max(height * cs, 560)

    def install(self) -> tuple[InputProcessor, RenderProcessor, HudProcessor]:
        """Add the window's processors to the game's world."""
        procs = (InputProcessor(self), RenderProcessor(self), HudProcessor(self))
        self.game.add_ui_processor(procs[0], INPUT_PRIORITY)
        self.game.add_ui_processor(procs[1], RENDER_PRIORITY)
        self.game.add_ui_processor(procs[2], HUD_PRIORITY)
        return procs

    def feed(self, events: Iterable[pygame.event.Event]) -> None:
        """Queue this frame's events for the InputProcessor."""
        self._events.extend(events)

    def take_events(self) -> list[pygame.event.Event]:
        events, self._events = self._events, []
        return events

    def say(self, message: str) -> None:
        self.message = message
        self.message_frames = _MESSAGE_FRAMES

    def text(self, s: str, color: Color, font: pygame.font.Font) -> pygame.Surface:
        """Rendered text, cached: font.render is the costliest call of a frame."""
        key = (s, color, font.get_height())
        surf = self._text.get(key)
        if surf is None:
            if len(self._text) >= _TEXT_CACHE_MAX:
                self._text.clear()
            surf = font.render(s, True, color)
            self._text[key] = surf
        return surf

    def to_screen(self, x: float, y: float) -> tuple[int, int]:
        cs = self.cell
        return int((x + 0.5) * cs), int((y + 0.5) * cs)

    def _draw_background(self) -> pygame.Surface:
        spec = self.game.spec
        cs = self.cell
        surf = pygame.Surface(self.map_size)
        surf.fill(_FLOOR)
        for team, cells in enumerate(spec.spawns):
            tint = tuple(c // 4 + 20 for c in TEAM_COLORS[team])
            for x, y in cells:
                surf.fill(tint, pygame.Rect(x * cs, y * cs, cs, cs))
        for x in range(spec.width + 1):
            pygame.draw.line(surf, _GRID, (x * cs, 0), (x * cs, spec.height * cs))
        for y in range(spec.height + 1):
            pygame.draw.line(surf, _GRID, (0, y * cs), (spec.width * cs, y * cs))
        for x, y in spec.blocked:
            color = _WATER if (x, y) in spec.water else _WALL
            surf.fill(color, pygame.Rect(x * cs, y * cs, cs, cs))
        for x, y in spec.cover:
            m = cs // 5
            r = pygame.Rect(x * cs + m, y * cs + m, cs - 2 * m, cs - 2 * m)
            pygame.draw.rect(surf, _COVER, r)
            pygame.draw.rect(surf, (120, 170, 110), r, 1)
        ox, oy = self.to_screen(*spec.objective)
        pygame.draw.circle(surf, _OBJECTIVE, (ox, oy), int((spec.objective_radius + 0.5) * cs), 1)
        d = cs // 3
        diamond = [(ox, oy - d), (ox + d, oy), (ox, oy + d), (ox - d, oy)]
        pygame.draw.polygon(surf, _OBJECTIVE, diamond)
        return surf


def cell_size(width: int, height: int) -> int:
    """Pixels per map cell so the map and the panel fit a 1280x800 window (8..32)."""
    fit = min((_MAX_WINDOW[0] - PANEL_WIDTH) // width, _MAX_WINDOW[1] // height)
    return max(8, min(32, fit))


class InputProcessor(esper.Processor):
    """Turns this frame's key presses into game commands and view toggles.

    Only one-off KEYDOWN events are used; no key acts while held.
    """

    def __init__(self, view: View) -> None:
        self.view = view
        self._by_key: dict[int, KeyBinding] = {k: b for b in KEY_BINDINGS for k in b.keys}

    def process(self, dt: float) -> None:
        view = self.view
        for event in view.take_events():
            if event.type == pygame.QUIT:
                view.quit_requested = True
            elif event.type == pygame.KEYDOWN:
                binding = self._by_key.get(event.key)
                if binding is not None:
                    self.handle(binding.action)

    def handle(self, action: Command | ViewAction) -> None:
        view = self.view
        if action is ViewAction.QUIT:
            view.quit_requested = True
        elif action is ViewAction.HELP:
            view.show_help = not view.show_help
        elif action is ViewAction.LABELS:
            view.show_labels = not view.show_labels
            view.say(f"labels {'on' if view.show_labels else 'off'}")
        elif isinstance(action, Command):
            view.say(view.game.apply(action))


class RenderProcessor(esper.Processor):
    """Draws the map and every living agent: body in team colour, ring in the colour of the tier
    that produced its plan, a dot while its plan is requested (hollow) or in flight (filled),
    a health bar, its current step, and a line to the target it is attacking."""

    def __init__(self, view: View) -> None:
        self.view = view

    def process(self, dt: float) -> None:
        view = self.view
        screen = view.screen
        cs = view.cell
        screen.fill(_PANEL)
        screen.blit(view.background, (0, 0))
        self._draw_hold(view)
        registry = view.game.plugin.config.registry
        agents: list[tuple[int, Team, Position, Health, PlanState, ActionQueue]] = []
        for ent, (team, pos, health, plan) in esper.get_components(
            Team, Position, Health, PlanState
        ):
            queue = esper.try_component(ent, ActionQueue)
            if queue is not None and esper.entity_exists(ent):
                agents.append((ent, team, pos, health, plan, queue))
        where = _spread({a[0]: view.to_screen(a[2].x, a[2].y) for a in agents}, cs // 4)
        for ent, team, _, _, _, queue in agents:
            step = queue.current
            if step is not None and step.action == "Attack" and step.args:
                target = where.get(step.args[0])
                if target is not None:
                    pygame.draw.line(screen, TEAM_COLORS[team.team % 2], where[ent], target, 1)
        body = max(3, int(cs * 0.34))
        ring = max(body + 2, int(cs * 0.47))
        labels = view.show_labels
        drawn: list[pygame.Rect] = []
        for ent, team, _, health, plan, queue in agents:
            x, y = where[ent]
            pygame.draw.circle(screen, TIER_COLORS.get(plan.tier, TIER_COLORS[None]), (x, y), ring)
            pygame.draw.circle(screen, (0, 0, 0), (x, y), body + 1)
            pygame.draw.circle(screen, TEAM_COLORS[team.team % 2], (x, y), body)
            if plan.status in (PlanStatus.REQUESTED, PlanStatus.IN_FLIGHT):
                mark = (x + ring, y - ring)
                filled = 0 if plan.status is PlanStatus.IN_FLIGHT else 1
                pygame.draw.circle(screen, (0, 0, 0), mark, 4)
                pygame.draw.circle(screen, (255, 255, 255), mark, 3, filled)
            frac = max(0.0, min(1.0, health.hp / max(1, health.max_hp)))
            bar = pygame.Rect(x - ring, y - ring - 4, 2 * ring, 3)
            screen.fill((60, 20, 20), bar)
            screen.fill((80, 220, 90), pygame.Rect(bar.x, bar.y, int(bar.w * frac), bar.h))
            if labels:
                surf = view.text(step_label(queue.current, registry), _TEXT, view.small)
                rect = surf.get_rect(midbottom=(x, bar.y))
                # In a crowd, labels would print over each other: the first one drawn wins.
                if rect.collidelist(drawn) < 0:
                    screen.blit(surf, rect)
                    drawn.append(rect)

    def _draw_hold(self, view: View) -> None:
        st = view.game.round
        spec = view.game.spec
        if st.hold_team is None or st.winner is not None:
            return
        frac = min(1.0, st.hold_s / spec.hold_seconds)
        x, y = view.to_screen(*spec.objective)
        r = int((spec.objective_radius + 0.5) * view.cell)
        rect = pygame.Rect(x - r, y - r, 2 * r, 2 * r)
        start = math.pi / 2
        pygame.draw.arc(
            view.screen, TEAM_COLORS[st.hold_team], rect, start, start + 2 * math.pi * frac, 4
        )


class HudProcessor(esper.Processor):
    """The side panel (planner settings, live metrics from ``plugin.stats()``, frame time and
    FPS, tier legend), the round banner, a paused marker, the last command and the help overlay."""

    def __init__(self, view: View) -> None:
        self.view = view

    def process(self, dt: float) -> None:
        view = self.view
        if view.frames % _STATS_EVERY_FRAMES == 0 or not view.stats:
            view.stats = view.game.stats()
        view.frames += 1
        self._panel(view)
        self._banner(view)
        if view.message_frames > 0:
            view.message_frames -= 1
            self._centre(view, view.message, view.medium, view.map_size[1] - 30)
        if view.show_help:
            self._help(view)

    def _panel(self, view: View) -> None:
        game = view.game
        cfg = game.plugin.config
        s = view.stats
        st = game.round
        rows: list[tuple[str, str, Color] | None] = [
            (f"aiplanner demo - {game.spec.title}", "", _TEXT),
            ("round", f"{st.number}     A {st.scores[0]} : {st.scores[1]} B", _TEXT),
            ("alive", f"A {st.alive[0]}   B {st.alive[1]}", _TEXT),
            ("tick", f"{game.tick}", _TEXT),
            ("backend", view.backend_name, _DIM),
            None,
            ("planner (live keys)", "", _DIM),
            ("strategy", f"{cfg.strategy}   [S]", _TEXT),
            ("batch", f"{cfg.max_batch_size}   [- / +]", _TEXT),
            ("max wait", f"{cfg.max_wait_ms:g} ms   [ [ / ] ]", _TEXT),
            ("cache", f"{'on' if cfg.cache_enabled else 'off'}   [C]", _TEXT),
            ("mode", _mode(cfg.mode, cfg.guided_decision, view.game.plugin.backend), _TEXT),
            ("agrees w/ rules", _agreement(s), _TEXT),
            None,
            ("metrics", "", _DIM),
            ("plans/s", _num(s.get("plans_per_s"), 1), _TEXT),
            (
                "latency ms",
                f"p50 {_num(s.get('latency_p50_ms'))}  p95 {_num(s.get('latency_p95_ms'))}  "
                f"p99 {_num(s.get('latency_p99_ms'))}",
                _TEXT,
            ),
            ("first plan", f"{_num(s.get('ttfp_ms'))} ms", _TEXT),
            ("cache hits", _pct(s.get("cache_hit_rate")), _TEXT),
            (
                "tokens/plan",
                f"in {_num(s.get('in_tokens_per_plan'), 1)}   out "
                f"{_num(s.get('out_tokens_per_plan'), 1)}",
                _TEXT,
            ),
            (
                "in flight",
                f"{_num(s.get('in_flight'))}   requests {_num(s.get('requests'))}",
                _TEXT,
            ),
            ("between frames", f"{_num(s.get('between_frames'))} agents' work", _TEXT),
            (
                "engine busy",  # near 100%: requests wait for one another (demand, not settings)
                f"{_pct(s.get('engine_busy'))}   {_num(s.get('engine_rows_per_s'))} rows/s",
                _TEXT,
            ),
            ("breaker", str(s.get("breaker", "-")), _TEXT),
            ("invalid", _invalid(s.get("invalid")), _TEXT),
            None,
            ("plans by tier", "", _DIM),
        ]
        tiers = s.get("tiers")
        counts = _tier_counts(tiers if isinstance(tiers, Mapping) else {})
        first_tier = len(rows)
        for tier in Tier:
            rows.append((_TIER_LABELS[tier], str(counts.get(tier, 0)), TIER_COLORS[tier]))
        rows += [
            None,
            ("frame", f"{view.frame_ms:.1f} ms   {view.fps:.1f} fps", _TEXT),
            ("PAUSED - N: step one tick" if game.paused else "H / F1: keys", "", _DIM),
        ]
        x0 = view.map_size[0] + 12
        x1 = x0 + 96
        y = 10
        line_h = view.small.get_height() + 3
        for i, row in enumerate(rows):
            if row is None:
                y += line_h // 2
                continue
            label, value, color = row
            lx = x0
            if first_tier <= i < first_tier + len(Tier):
                pygame.draw.circle(view.screen, color, (x0 + 5, y + line_h // 2 - 2), 5)
                lx = x0 + 16
            view.screen.blit(view.text(label, color if value == "" else _DIM, view.small), (lx, y))
            if value:
                view.screen.blit(view.text(value[:_VALUE_CHARS], color, view.small), (x1, y))
            y += line_h

    def _banner(self, view: View) -> None:
        st = view.game.round
        if st.winner is None:
            return
        title = "Draw" if st.winner < 0 else f"Team {TEAM_NAMES[st.winner]} wins"
        mid = view.map_size[1] // 2
        color = TEAM_COLORS[st.winner] if st.winner >= 0 else _TEXT
        self._centre(view, title, view.large, mid - 30, color)
        left = max(0.0, view.game.settings.intermission_s - st.over_s)
        self._centre(view, f"{st.reason} - next round in {left:.1f}s", view.medium, mid + 12)

    def _centre(
        self, view: View, text: str, font: pygame.font.Font, y: int, color: Color = _TEXT
    ) -> None:
        surf = view.text(text, color, font)
        x = (view.map_size[0] - surf.get_width()) // 2
        box = pygame.Rect(x - 8, y - 4, surf.get_width() + 16, surf.get_height() + 8)
        view.screen.fill((0, 0, 0), box)
        view.screen.blit(surf, (x, y))

    def _help(self, view: View) -> None:
        rows = [(b.label, b.help) for b in KEY_BINDINGS]
        line_h = view.medium.get_height() + 4
        w, h = 420, line_h * (len(rows) + 2) + 16
        box = pygame.Rect((view.map_size[0] - w) // 2, (view.map_size[1] - h) // 2, w, h)
        overlay = pygame.Surface(box.size, pygame.SRCALPHA)
        overlay.fill((0, 0, 0, 215))
        view.screen.blit(overlay, box.topleft)
        y = box.y + 10
        view.screen.blit(
            view.text("Keys (changes apply to the next batch)", _TEXT, view.medium), (box.x + 14, y)
        )
        y += line_h + 4
        for label, text in rows:
            view.screen.blit(view.text(label, _OBJECTIVE, view.medium), (box.x + 14, y))
            view.screen.blit(view.text(text, _TEXT, view.medium), (box.x + 130, y))
            y += line_h


def _spread(where: dict[int, tuple[int, int]], radius: int) -> dict[int, tuple[int, int]]:
    """Fan out agents drawn on the same pixel, so a stack of them stays visible (drawing only)."""
    stacks: dict[tuple[int, int], list[int]] = {}
    for ent, xy in where.items():
        stacks.setdefault(xy, []).append(ent)
    out = dict(where)
    for (x, y), ents in stacks.items():
        if len(ents) < 2:
            continue
        for k, ent in enumerate(sorted(ents)):
            angle = 2 * math.pi * k / len(ents)
            out[ent] = (x + int(radius * math.cos(angle)), y + int(radius * math.sin(angle)))
    return out


def _mode(mode: str, decision: str, backend: Backend | None) -> str:
    """``guided/score``, ``guided/generate`` (also where the backend cannot score), ``free``,
    or ``rules`` when there is no backend."""
    if backend is None:
        return "rules"
    if mode != "guided":
        return mode
    scoring = decision == "score" and backend.info.scoring
    return f"guided/{'score' if scoring else 'generate'}"


def _agreement(stats: Mapping[str, object]) -> str:
    """How often the model's pick was the rules' first choice, of how many decisions."""
    n = stats.get("decisions")
    if not isinstance(n, int) or n == 0:
        return "-"
    return f"{_pct(stats.get('agree_rate'))} of {n}"


def _num(value: object, digits: int = 0) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:.{digits}f}"


def _pct(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{100.0 * value:.0f}%"


def _invalid(value: object) -> str:
    """Invalid plans: the total, then the commonest reasons with their counts, as many as fit
    the panel's value column whole ("..." for the others: never a reason cut mid-word)."""
    if not isinstance(value, Mapping) or not value:
        return "0"
    counts = sorted(
        ((str(k), v) for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)),
        key=lambda kv: (-kv[1], kv[0]),
    )
    total = sum(v for _, v in counts)
    shown: list[str] = []
    for i, (reason, n) in enumerate(counts):
        parts = [*shown, f"{reason} {n}"]
        if i + 1 < len(counts):
            parts.append("...")
        if len(f"{total} ({', '.join(parts)})") > _VALUE_CHARS:
            break
        shown.append(f"{reason} {n}")
    if len(shown) < len(counts):
        shown.append("...")
    return f"{total} ({', '.join(shown)})"


def _tier_counts(raw: Mapping[object, object]) -> dict[Tier, int]:
    """Tier counts from stats, whose keys may be Tier members or their string values."""
    by_value = {t.value: t for t in Tier}
    out: dict[Tier, int] = {}
    for key, count in raw.items():
        tier = key if isinstance(key, Tier) else by_value.get(str(key))
        if tier is not None and isinstance(count, int):
            out[tier] = count
    return out
