"""A* (`find_path`) and `reachable` timed on the whole-tick benchmark's map, optionally against
another implementation of the same module in the same run.

Run:

    python benchmarks/pathfinding.py [--pairs 300] [--rounds 3]
    git show 00990a7:aiplanner/pathfinding.py > /tmp/pathfinding_old.py
    python benchmarks/pathfinding.py --against /tmp/pathfinding_old.py

``--pairs`` random walkable start/goal pairs on the 64x48 map with 150 walls
(``whole_tick.make_battlefield``), long searches and short ones (goals within 4 cells);
``reachable`` within 10 straight steps of each start. With ``--against``, both modules run the
same pairs, alternated ``--rounds`` times, and must return the same paths and costs (the run stops
otherwise); the ratio is printed from the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import time
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).parent))

import whole_tick

import aiplanner.pathfinding as current


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("pathfinding_against", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _time(module: ModuleType, calls: list[tuple[str, tuple[object, ...]]]) -> dict[str, float]:
    spent: dict[str, float] = {}
    for name, args in calls:
        started = time.perf_counter()
        getattr(module, name)(*args)
        spent[name] = spent.get(name, 0.0) + time.perf_counter() - started
    return spent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--against", help="another pathfinding.py to compare with")
    args = p.parse_args()
    field = whole_tick.make_battlefield(seed=1)
    rng = random.Random(args.seed)
    cells = [
        (x, y) for x in range(field.width) for y in range(field.height) if field.walkable(x, y)
    ]
    far = [(rng.choice(cells), rng.choice(cells)) for _ in range(args.pairs)]
    near: list[tuple[tuple[int, int], tuple[int, int]]] = []
    while len(near) < args.pairs:
        s = rng.choice(cells)
        g = (s[0] + rng.randint(-4, 4), s[1] + rng.randint(-4, 4))
        if field.walkable(*g):
            near.append((s, g))
    groups: dict[str, list[tuple[str, tuple[object, ...]]]] = {
        "find_path (far)": [("find_path", (field, s, g)) for s, g in far],
        "find_path (near)": [("find_path", (field, s, g)) for s, g in near],
        "reachable (10 steps)": [("reachable", (field, s, 100)) for s, _ in far],
    }
    modules = {"this tree": current}
    if args.against:
        other = _load(args.against)
        modules["against"] = other
        for calls in groups.values():
            for name, call in calls:
                mine, theirs = getattr(current, name)(*call), getattr(other, name)(*call)
                if mine != theirs:
                    raise SystemExit(f"{name}{call[1:]}: {mine!r} != {theirs!r}")
        print(f"same results on all {sum(len(c) for c in groups.values())} calls")
    totals = {label: dict.fromkeys(groups, 0.0) for label in modules}
    for _ in range(args.rounds):
        for label, module in modules.items():
            for group, calls in groups.items():
                totals[label][group] += sum(_time(module, calls).values())
    for group, calls in groups.items():
        n = len(calls) * args.rounds
        row = [f"{group:22s}"]
        for label in modules:
            row.append(f"{label} {1000 * totals[label][group] / n:.3f} ms/call")
        if args.against:
            row.append(f"x{totals['against'][group] / totals['this tree'][group]:.2f} faster")
        print("  ".join(row))


if __name__ == "__main__":
    main()
