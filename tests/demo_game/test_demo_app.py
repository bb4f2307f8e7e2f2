"""The command line and the window, headless: screenshots, record/replay, errors, keys, HUD."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import esper
import pygame
import pytest

from aiplanner import EmbeddedBackend, EngineSettings
from aiplanner.actions import DEFAULT_REGISTRY, Step
from aiplanner.components import PlanState, PlanStatus, Position, Tier
from demo_game.app import (
    DemoError,
    Options,
    PlanCache,
    backend_label,
    build_backend,
    main,
    parse_args,
    plan_cache_enabled,
    run,
)
from demo_game.game import Command, Game
from demo_game.render import (
    _VALUE_CHARS,
    KEY_BINDINGS,
    TIER_COLORS,
    View,
    ViewAction,
    _invalid,
    step_label,
)

GameFactory = Callable[..., Game]


ROOT = Path(__file__).resolve().parents[2]
FAST = ["--headless", "--fps", "0", "--squad-size", "3"]


def _colours(path: Path) -> set[tuple[int, ...]]:
    img = pygame.image.load(str(path))
    w, h = img.get_size()
    return {tuple(img.get_at((x, y)))[:3] for x in range(0, w, 7) for y in range(0, h, 7)}


def test_screenshot_is_a_png_with_map_agents_and_hud(tmp_path: Path) -> None:
    shot = tmp_path / "final.png"
    rc = main(
        [*FAST, "--backend", "scripted", "--lockstep", "--frames", "60", "--screenshot", str(shot)]
    )
    assert rc == 0
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pygame.display.init()
    try:
        colours = _colours(shot)
    finally:
        pygame.display.quit()
    assert len(colours) > 12  # floor, walls, cover, teams, tier rings, text...


def test_record_then_replay_gives_the_same_final_state(tmp_path: Path) -> None:
    rec_path = tmp_path / "run.json"
    recorded = run(
        Options(
            backend="scripted",
            lockstep=True,
            headless=True,
            fps=0,
            frames=150,
            squad_size=3,
            seed=4,
            record=str(rec_path),
        ),
        log=False,
    )
    assert recorded.recording is not None and recorded.plans_applied > 0
    assert len(recorded.recording.plans) == recorded.plans_applied
    # The replay takes map, seed, squad size and frame count from the file.
    replayed = run(Options(headless=True, fps=0, replay=str(rec_path)), log=False)
    assert replayed.frames == 150
    assert replayed.digest == recorded.digest
    assert replayed.plans_applied == recorded.plans_applied
    assert replayed.stats["backend"] == "heuristic"  # no backend was used


def test_cli_record_and_replay_print_the_same_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec_path = tmp_path / "cli.json"
    base = [*FAST, "--map", "canyon", "--frames", "90"]
    assert main([*base, "--backend", "scripted", "--lockstep", "--record", str(rec_path)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert main(["--headless", "--fps", "0", "--replay", str(rec_path)]) == 0
    second = capsys.readouterr().out.splitlines()[0]
    assert "digest" in first and first == second


def test_bad_map_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": ["#####", "#A.B#", "#...#", "#...#", "#####"]}')
    assert main([*FAST, "--backend", "heuristic", "--map", str(bad), "--frames", "1"]) == 2
    err = capsys.readouterr().err
    assert f"bad map: {bad}: rows: exactly one objective" in err


def test_missing_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.gguf"
    assert main([*FAST, "--backend", "embedded", "--model", str(missing), "--frames", "1"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--backend heuristic" in err


def test_bad_recording_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "rec.json"
    bad.write_text('{"version": 1, "map": "crossroads"}')
    assert main([*FAST, "--replay", str(bad)]) == 2
    assert "cannot replay" in capsys.readouterr().err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("backend", ["openai", "ollama"])
def test_unreachable_server_warns_and_names_the_fallback_tier(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    rc = main([*FAST, "--backend", backend, "--base-url", url, "--frames", "3"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "unreachable" in err and url in err and "heuristic tier" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--squad-size", "0"],
        ["--squad-size", "65"],
        ["--backend", "magic"],
        ["--strategy", "telepathy"],
        ["--record", "a.json", "--replay", "b.json"],
        ["--threads", "0"],
        ["--engine-setting", "bogus=1"],
        ["--engine-setting", "chunk_tokens=lots"],
        ["--engine-setting", "n_threads=4"],  # the backend's own: --threads
        ["--engine", "serial", "--engine-setting", "chunk_tokens=64"],
        ["--backend", "scripted", "--engine-setting", "chunk_tokens=64"],
        ["--backend", "openai", "--engine", "batched"],  # the embedded backend's options
        ["--backend", "ollama", "--weights", "f16"],
        ["--backend", "heuristic", "--engine", "serial"],
    ],
)
def test_bad_options_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2


def test_defaults_follow_the_brief() -> None:
    opts = parse_args([])
    assert (opts.backend, opts.squad_size, opts.threads, opts.map) == (
        "embedded",
        5,
        2,
        "crossroads",
    )
    assert parse_args(["--squad-size", "50"]).squad_size == 50


def test_the_embedded_engine_is_chosen_on_the_command_line(tmp_path: Path) -> None:
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF" + bytes(64))
    assert parse_args([]).engine == "auto"
    for engine, parallel in (("auto", True), ("serial", False), ("batched", True)):
        opts = parse_args(["--engine", engine, "--model", str(model)])
        backend = build_backend(opts, [])
        assert backend is not None and backend.info.parallel is parallel
        anyio.run(backend.aclose)


def test_the_batched_engine_settings_are_set_on_the_command_line(tmp_path: Path) -> None:
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF" + bytes(64))
    assert parse_args([]).engine_settings is None
    argv = ["--model", str(model), "--threads", "1"]
    argv += ["--engine-setting", "chunk_tokens=64", "--engine-setting", "prefix_cache=4"]
    opts = parse_args(argv)
    backend = build_backend(opts, [])
    assert isinstance(backend, EmbeddedBackend)
    try:
        running = backend.engine_settings
        assert running is not None
        assert (running.chunk_tokens, running.prefix_cache) == (64, 4)
        assert running.n_threads == 1  # the backend's, from --threads
        assert running.kept_roots == EngineSettings().kept_roots  # the rest: defaults
    finally:
        anyio.run(backend.aclose)


def test_the_plan_cache_is_off_for_the_embedded_model_unless_asked_for() -> None:
    assert parse_args([]).plan_cache == "auto"
    assert not plan_cache_enabled(parse_args([]))  # the default backend: the embedded model
    for backend in ("openai", "ollama", "scripted", "heuristic"):
        assert plan_cache_enabled(parse_args(["--backend", backend]))
    assert plan_cache_enabled(parse_args(["--plan-cache", "on"]))
    assert not plan_cache_enabled(parse_args(["--backend", "ollama", "--plan-cache", "off"]))
    with pytest.raises(SystemExit):
        parse_args(["--plan-cache", "sometimes"])


def test_a_run_without_the_plan_cache_asks_the_backend_instead() -> None:
    def planned(plan_cache: PlanCache) -> dict[str, object]:
        opts = Options(
            backend="scripted",
            lockstep=True,
            headless=True,
            fps=0,
            frames=300,
            plan_cache=plan_cache,
        )
        return run(opts, log=False).stats

    on, off = planned("on"), planned("off")
    assert on["cache_enabled"] is True and off["cache_enabled"] is False
    assert isinstance(on["cache_hits"], int) and on["cache_hits"] > 0  # the cache is used...
    assert off["cache_hits"] == 0 and off["cache_misses"] == 0  # ...or never looked at
    on_tiers, off_tiers = on["tiers"], off["tiers"]
    assert isinstance(on_tiers, dict) and isinstance(off_tiers, dict)
    assert "cache" not in off_tiers and off_tiers["llm"] > on_tiers["llm"]


def _view(make_game: GameFactory) -> View:
    game = make_game(squad_size=4)
    size = View.window_size(game.spec.width, game.spec.height)
    view = View(game, pygame.display.set_mode(size), backend_name="scripted")
    view.install()
    return view


def _press(view: View, key: int) -> None:
    view.feed([pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0)])
    view.game.process()


def test_the_hud_names_the_adapter_the_embedded_backend_applies() -> None:
    from aiplanner import EmbeddedBackend, ScriptedBackend
    from aiplanner.adapters import DEFAULT_ADAPTER_NAME

    shipped = EmbeddedBackend(n_threads=1)  # the model loads on first use: nothing loads here
    bare = EmbeddedBackend(n_threads=1, adapter=None)
    try:
        assert backend_label("embedded", shipped) == f"embedded + {DEFAULT_ADAPTER_NAME}"
        assert backend_label("embedded", bare) == "embedded, no adapter"
        assert backend_label("scripted", ScriptedBackend()) == "scripted"
        assert backend_label("heuristic", None) == "heuristic"
    finally:
        shipped.close()
        bare.close()


@pytest.mark.usefixtures("display")
def test_keys_tune_the_planner_and_toggle_the_view(make_game: GameFactory) -> None:
    view = _view(make_game)
    plugin = view.game.plugin
    batch = plugin.config.max_batch_size
    _press(view, pygame.K_EQUALS)
    assert plugin.config.max_batch_size > batch and view.message.startswith("batch size")
    _press(view, pygame.K_MINUS)
    assert plugin.config.max_batch_size == batch
    wait = plugin.config.max_wait_ms
    _press(view, pygame.K_RIGHTBRACKET)
    assert plugin.config.max_wait_ms > wait
    strategy = plugin.config.strategy
    _press(view, pygame.K_s)
    assert plugin.config.strategy != strategy
    cache = plugin.config.cache_enabled
    _press(view, pygame.K_c)
    assert plugin.config.cache_enabled is not cache
    _press(view, pygame.K_SPACE)
    assert view.game.paused
    tick = view.game.tick
    _press(view, pygame.K_n)  # the step is granted this frame and taken on the next
    view.game.process()
    assert view.game.tick == tick + 1
    _press(view, pygame.K_F1)
    assert view.show_help
    _press(view, pygame.K_l)
    assert not view.show_labels
    _press(view, pygame.K_q)
    assert view.quit_requested
    view.quit_requested = False
    view.feed([pygame.event.Event(pygame.QUIT)])
    view.game.process()
    assert view.quit_requested


def test_every_binding_is_unique_and_documented() -> None:
    keys = [k for b in KEY_BINDINGS for k in b.keys]
    assert len(keys) == len(set(keys))
    assert all(b.help and b.label for b in KEY_BINDINGS)

    bound = {b.action for b in KEY_BINDINGS}
    assert set(Command) | set(ViewAction) == bound


def _pixel_at_agent(view: View, entity: int) -> tuple[int, int, int]:
    pos = esper.component_for_entity(entity, Position)
    x, y = view.to_screen(pos.x, pos.y)
    ring = int(view.cell * 0.47) - 1
    return tuple(view.screen.get_at((x + ring, y))[:3])  # type: ignore[return-value]


@pytest.mark.usefixtures("display")
def test_agents_are_ringed_in_their_tier_colour_and_marked_in_flight(
    make_game: GameFactory,
) -> None:
    view = _view(make_game)
    view.show_labels = False
    view.game.apply(Command.PAUSE)
    entity = view.game.agents()[0][0]
    state = esper.component_for_entity(entity, PlanState)
    for tier in (Tier.LLM, Tier.HEURISTIC, Tier.CACHE):
        state.tier = tier
        view.game.process()  # paused: draws only
        assert _pixel_at_agent(view, entity) == TIER_COLORS[tier]
    pos = esper.component_for_entity(entity, Position)
    x, y = view.to_screen(pos.x, pos.y)
    ring = max(int(view.cell * 0.34) + 2, int(view.cell * 0.47))
    state.status = PlanStatus.IN_FLIGHT
    view.game.process()
    assert tuple(view.screen.get_at((x + ring, y - ring)))[:3] == (255, 255, 255)
    state.status = PlanStatus.EXECUTING
    view.game.process()
    assert tuple(view.screen.get_at((x + ring, y - ring)))[:3] != (255, 255, 255)


def test_step_labels() -> None:
    assert step_label(Step("MoveTo", (12, 4)), DEFAULT_REGISTRY) == "move 12,4"
    assert step_label(Step("Attack", (17,)), DEFAULT_REGISTRY) == "atk #17"
    assert step_label(Step("Reload"), DEFAULT_REGISTRY) == "reload"
    assert step_label(Step("Wait", (10,)), DEFAULT_REGISTRY) == "wait 10"
    assert step_label(None, DEFAULT_REGISTRY) == "-"


def test_the_hud_line_of_invalid_plans_fits_its_column_with_whole_reasons() -> None:
    assert _invalid({}) == "0"
    assert _invalid(None) == "0"
    assert _invalid({"bad_target": 2, "no_path": 5}) == "7 (no_path 5, bad_target 2)"
    # Seen in the demo: two long reasons used to be cut mid-word by the column's width.
    many = {"stale_bad_target": 8, "stale_bad_heal_target": 2, "unknown_action": 1}
    line = _invalid(many)
    assert line == "11 (stale_bad_target 8, ...)"
    assert len(line) <= _VALUE_CHARS
    lone = _invalid({"x" * 40: 3})
    assert lone == "3 (...)"


def test_python_m_demo_game_runs_headless(tmp_path: Path) -> None:
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo_game",
            "--backend",
            "heuristic",
            "--headless",
            "--fps",
            "0",
            "--frames",
            "20",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("frames 20 ")


@pytest.mark.model
def test_embedded_model_plans_some_agents_live() -> None:
    pytest.importorskip("llama_cpp")
    # One engine thread: the slowest setting (on a loaded 2-core machine, two engine threads
    # competing with the render loop and other processes can make calls miss their deadline).
    result = run(
        Options(backend="embedded", threads=1, headless=True, fps=30, frames=300, squad_size=3),
        log=False,
    )
    tiers = result.stats["tiers"]
    assert isinstance(tiers, dict)
    assert tiers.get("llm", 0) > 0, result.stats


def test_a_model_that_cannot_load_stops_the_demo_before_its_first_frame(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    model = tmp_path / "broken.gguf"
    model.write_bytes(b"GGUF" + bytes(64))  # the magic, then nothing llama.cpp can read
    with pytest.raises(DemoError, match="cannot load the model"):
        run(Options(backend="embedded", model=str(model), headless=True, frames=5), log=False)


def test_the_cycle_collector_runs_between_frames_and_is_given_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc

    import aiplanner

    seen: list[tuple[bool, int]] = []  # (automatic collection on?, frozen objects) per frame

    class Recording(aiplanner.FrameCollector):
        def between_frames(self) -> int:
            seen.append((gc.isenabled(), gc.get_freeze_count()))
            return super().between_frames()

    monkeypatch.setattr(aiplanner, "FrameCollector", Recording)
    assert gc.isenabled()
    opts = Options(backend="scripted", lockstep=True, headless=True, fps=0, frames=12)
    result = run(opts, log=False)
    assert len(seen) == result.frames == 12
    # Inside the loop: automatic collection off, the built world frozen.
    assert all(not on and frozen > 0 for on, frozen in seen)
    # After the run, the interpreter's collector as it was.
    assert gc.isenabled() and gc.get_freeze_count() == 0
    seen.clear()
    run(
        Options(backend="scripted", lockstep=True, headless=True, fps=0, frames=5, frame_gc=False),
        log=False,
    )
    assert seen == [] and gc.isenabled()
    assert parse_args(["--no-frame-gc"]).frame_gc is False and parse_args([]).frame_gc


def test_the_loop_plans_in_each_frames_idle_time_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiplanner
    from demo_game.app import IDLE_PLANNING_UNTIL_MS

    offered: list[float] = []
    original = aiplanner.PlannerPlugin.between_frames

    def recording(self: aiplanner.PlannerPlugin, idle_ms: float) -> int:
        offered.append(idle_ms)
        return original(self, idle_ms)

    monkeypatch.setattr(aiplanner.PlannerPlugin, "between_frames", recording)
    result = run(Options(backend="scripted", headless=True, fps=0, frames=8), log=False)
    assert len(offered) == result.frames == 8
    # What is left of a 60 fps frame less the reserve, after the frame's own work.
    assert all(ms < IDLE_PLANNING_UNTIL_MS for ms in offered)
    offered.clear()
    run(Options(backend="scripted", headless=True, fps=0, frames=4, idle_planning=False), log=False)
    assert offered == []
    assert parse_args(["--no-idle-planning"]).idle_planning is False
    assert parse_args([]).idle_planning
