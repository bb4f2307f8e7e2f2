"""The command line of ``python -m aiplanner bench`` (and ``bench compare``).

python -m aiplanner bench [--backend B] [--quick] [--suites tokens strategies ...] [--out DIR]
python -m aiplanner bench --llama-server 10        # build/start llama-server, bench it
python -m aiplanner bench compare OLD.json NEW.json
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import orjson

from aiplanner.backends.factory import BACKEND_NAMES
from aiplanner.bench.compare import compare_results, format_changes
from aiplanner.bench.llama_server import LlamaServer
from aiplanner.bench.options import BenchOptions
from aiplanner.bench.progress import make_progress
from aiplanner.bench.registry import suite_names, suites
from aiplanner.bench.runner import run_suites
from aiplanner.errors import PlannerError

__all__ = ["add_backend_arguments", "add_bench_parser", "bench_main"]


def add_backend_arguments(p: argparse.ArgumentParser, default: str = "embedded") -> None:
    """``--backend/--base-url/--model/--threads/--agents`` as ``plan`` and the demo have them."""
    p.add_argument("--backend", default=default, choices=BACKEND_NAMES)
    p.add_argument("--base-url", help="server URL for openai/ollama")
    p.add_argument("--model", help="GGUF path (embedded) or model name (openai/ollama)")
    p.add_argument("--threads", type=int, help="embedded engine threads")
    p.add_argument("--agents", type=int, default=10, help="agents in a planning round")


def add_bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser("bench", help="measure tokens, strategies, tick and frame cost, soak")
    add_backend_arguments(b)
    b.add_argument("--quick", action="store_true", help="a run of a few minutes")
    b.add_argument("--repeat", type=int, default=3, help="repetitions of each figure")
    b.add_argument("--suites", nargs="+", metavar="NAME", help=f"of: {', '.join(suite_names())}")
    b.add_argument("--out", default="bench-results", help="folder for results.json/.md, PNGs")
    b.add_argument("--concurrency", type=int, help="openai: requests in flight (server slots)")
    b.add_argument(
        "--llama-server",
        type=int,
        metavar="SLOTS",
        help="build (first time) and start llama-server with SLOTS slots; bench it over HTTP",
    )
    b.add_argument("--list", action="store_true", help="list the suites and exit")
    b.add_argument("--quiet", action="store_true", help="no progress display")
    bsub = b.add_subparsers(dest="bench_command")
    c = bsub.add_parser("compare", help="flag regressions between two results.json files")
    c.add_argument("old")
    c.add_argument("new")
    c.add_argument("--all", action="store_true", help="list every figure, not only changes")


def _compare(args: argparse.Namespace) -> int:
    try:
        old = orjson.loads(Path(args.old).read_bytes())
        new = orjson.loads(Path(args.new).read_bytes())
        changes = compare_results(old, new)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_changes(changes, everything=args.all))
    return 1 if any(c.verdict == "regression" for c in changes) else 0


def bench_main(args: argparse.Namespace) -> int:
    """Run ``bench`` or ``bench compare``; 0 when every suite ran (no regression), else 1 or 2."""
    if args.bench_command == "compare":
        return _compare(args)
    if args.list:
        for s in suites():
            print(f"{s.name:<12} {s.summary}")
        return 0
    if args.repeat < 1 or args.agents < 1:
        print("error: --repeat and --agents must be at least 1", file=sys.stderr)
        return 2
    opts = BenchOptions(
        backend=args.backend,
        base_url=args.base_url,
        model=args.model,
        threads=args.threads,
        agents=args.agents,
        repeat=args.repeat,
        quick=args.quick,
        concurrency=args.concurrency,
    )
    progress = make_progress(args.quiet)
    server: LlamaServer | None = None
    try:
        if args.llama_server:
            progress.note("starting llama-server (built on first use: minutes)")
            server = LlamaServer(slots=args.llama_server, threads=args.threads or 2).start()
            opts = dataclasses.replace(
                opts,
                backend="openai",
                base_url=server.base_url,
                model=None,
                concurrency=args.llama_server,
            )
        doc = run_suites(opts, args.suites, Path(args.out), progress)
    except PlannerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
    out = Path(args.out)
    print((out / "results.md").read_text())
    print(f"results: {out / 'results.json'}, {out / 'results.md'}")
    results = doc["suites"]
    assert isinstance(results, dict)
    return 1 if any("error" in r for r in results.values()) else 0
