"""Command line: ``python -m aiplanner plan|doctor|bench|tune``.

``plan`` prints the plan one backend gives for a sample (or given) snapshot, with its timings.
``doctor`` reports which backends and models are reachable from here.
``bench`` measures every figure of the README (:mod:`aiplanner.bench`); ``bench compare`` flags
regressions between two runs. ``tune`` picks the strategy and batch size by measurement and
writes them as TOML (:mod:`aiplanner.tune`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import httpx
import orjson

from aiplanner.actions import DEFAULT_REGISTRY, Step
from aiplanner.backends.base import Backend
from aiplanner.backends.factory import BACKEND_NAMES, create_backend
from aiplanner.bench.cli import add_bench_parser, bench_main
from aiplanner.breaker import CircuitBreaker
from aiplanner.components import Battlefield
from aiplanner.config import MODES, PROMPT_TIERS
from aiplanner.errors import PlannerError
from aiplanner.heuristic import HeuristicPlanner
from aiplanner.metrics import Metrics
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.snapshot import SeenUnit, SelfView, WorldSnapshot
from aiplanner.strategies import Batch, PlanContext, run_batch
from aiplanner.training.train import add_train_parser, train_main
from aiplanner.tune import add_tune_parser, tune_main

__all__ = ["main", "sample_snapshot"]


def sample_snapshot() -> WorldSnapshot:
    """A small, realistic situation: two enemies, one in range, a hurt ally, cover nearby."""
    field = Battlefield(
        24, 16, frozenset({(8, 6), (8, 7), (8, 8), (15, 3)}), ((7, 6), (12, 9), (4, 12)), (20, 8)
    )
    return WorldSnapshot(
        tick=120,
        me=SelfView(7, "tactical", 0, 5, 7, 70, 100, 3, 6, False, 6.0),
        enemies=(SeenUnit(91, 10, 7, 60, False, 5.0), SeenUnit(94, 13, 10, 100, True, 8.5)),
        allies=(SeenUnit(8, 4, 9, 35, False, 2.2),),
        cover=((7, 6), (4, 12)),
        obstacles=((8, 6), (8, 7), (8, 8)),
        objective=(20, 8),
        field=field,
    )


def _plan(args: argparse.Namespace) -> int:
    if args.snapshot:
        try:
            snap = WorldSnapshot.from_dict(orjson.loads(Path(args.snapshot).read_bytes()))
        except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
            print(f"error: cannot read snapshot {args.snapshot}: {exc}", file=sys.stderr)
            return 2
    else:
        snap = sample_snapshot()
    try:
        backend = create_backend(args.backend, model=args.model, base_url=args.base_url)
    except PlannerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if backend is None:
        plan = HeuristicPlanner().plan(snap)
        print(orjson.dumps({"tier": "heuristic", "plan": _steps(plan.steps)}).decode())
        return 0
    req = PlanRequest(
        entity=snap.me.id,
        plan_id=1,
        snapshot=snap,
        candidates=HeuristicPlanner().candidates(snap, 4),
        requested_tick=snap.tick,
        requested_at=0.0,
        deadline=args.timeout,
        budget_s=args.timeout,
    )
    started = time.monotonic()
    outcome, metrics = anyio.run(_run_one, backend, req, args.mode, args.prompt)
    total = time.monotonic() - started
    stats = metrics.stats()
    report: dict[str, object] = {
        "backend": backend.info.name,
        "model": backend.info.model,
        "mode": args.mode,
        "tier": outcome.tier.value if outcome.tier else None,
        "plan": _steps(outcome.plan.steps) if outcome.plan else None,
        "error": str(outcome.error) if outcome.error else None,
        "raw": outcome.raw,
        "candidates": [_steps(c.steps) for c in req.candidates] if args.mode == "guided" else None,
        "ttft_ms": stats["ttft_p50_ms"],
        "call_ms": stats["call_p50_ms"],
        "wall_ms": round(total * 1000, 1),
        "prompt_tokens": stats["in_tokens_per_plan"],
        "completion_tokens": stats["out_tokens_per_plan"],
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0 if outcome.ok else 1


async def _run_one(
    backend: Backend, req: PlanRequest, mode: str, prompt_tier: str
) -> tuple[PlanOutcome, Metrics]:
    out: list[PlanOutcome] = []
    metrics = Metrics()
    ctx = PlanContext(backend, DEFAULT_REGISTRY, metrics, CircuitBreaker(), out.append)
    try:
        await run_batch(
            ctx, Batch((req,), "sequential", mode, prompt_tier, True, req.requested_tick)
        )
    finally:
        await backend.aclose()
    return out[0], metrics


def _steps(steps: Sequence[Step]) -> str:
    return "; ".join(f"{s.action}({','.join(map(str, s.args))})" for s in steps)


def _doctor(args: argparse.Namespace) -> int:
    rows: list[tuple[str, bool, str]] = []
    try:
        import llama_cpp

        rows.append(("llama-cpp-python", True, f"version {llama_cpp.__version__}"))
    except ImportError:
        rows.append(("llama-cpp-python", False, "not installed: pip install 'aiplanner[embedded]'"))
    try:
        from aiplanner.model_path import resolve_model_path

        path = resolve_model_path(args.model)
        rows.append(("embedded model", True, f"{path} ({path.stat().st_size / 1e6:.0f} MB)"))
        rows.append(_adapter_row(path))
    except PlannerError as exc:
        rows.append(("embedded model", False, str(exc)))
    openai_base = args.base_url or os.environ.get("OPENAI_BASE_URL")
    if openai_base:
        base = openai_base.rstrip("/").removesuffix("/v1")
        rows.append(("openai-compatible", *_probe(f"{base}/v1/models")))
    else:
        rows.append(("openai-compatible", False, "OPENAI_BASE_URL not set"))
    host = os.environ.get("OLLAMA_HOST", "http://127.0.0.1:11434")
    if "://" not in host:
        host = "http://" + host
    rows.append(("ollama", *_probe(f"{host.rstrip('/')}/api/tags")))
    width = max(len(r[0]) for r in rows)
    for name, ok, detail in rows:
        print(f"{name:<{width}}  {'ok ' if ok else 'no '}  {detail}")
    return 0


def _adapter_row(model: Path) -> tuple[str, bool, str]:
    """Which LoRA adapter the embedded backend applies beside ``model`` by default, and why."""
    from aiplanner.adapters import ADAPTER_ENV_VAR, resolve_adapter

    try:
        adapter = resolve_adapter("default", model)
    except PlannerError as exc:
        return "embedded adapter", False, str(exc)
    if adapter is None:
        why = f"${ADAPTER_ENV_VAR}=none" if os.environ.get(ADAPTER_ENV_VAR) else "not applied"
        return "embedded adapter", True, f"none ({why})"
    return "embedded adapter", True, f"{adapter} ({adapter.stat().st_size / 1e6:.1f} MB)"


def _probe(url: str) -> tuple[bool, str]:
    try:
        r = httpx.get(url, timeout=httpx.Timeout(2.0, connect=1.0))
    except httpx.HTTPError as exc:
        return False, f"{url}: {type(exc).__name__}"
    return r.is_success, f"{url}: HTTP {r.status_code}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aiplanner", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="print one plan for a sample or given snapshot, with timings")
    p.add_argument("--backend", default="embedded", choices=BACKEND_NAMES)
    p.add_argument("--snapshot", help="a JSON file as written by WorldSnapshot.to_json()")
    p.add_argument("--model", help="GGUF path (embedded) or model name (openai/ollama)")
    p.add_argument("--base-url", help="server URL for openai/ollama")
    p.add_argument("--mode", default="guided", choices=MODES)
    p.add_argument("--prompt", default="compressed", choices=PROMPT_TIERS)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole call")
    d = sub.add_parser("doctor", help="report which backends and models are reachable")
    d.add_argument("--model", help="GGUF path to check instead of the default")
    d.add_argument("--base-url", help="OpenAI-compatible server to probe")
    add_bench_parser(sub)
    add_tune_parser(sub)
    add_train_parser(sub)
    args = parser.parse_args(argv)
    commands = {"plan": _plan, "doctor": _doctor, "bench": bench_main, "tune": tune_main}
    commands["train"] = train_main
    return commands[args.command](args)
