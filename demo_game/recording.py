"""Record every applied plan of a run to JSON, and read it back as a replay schedule.

A recording holds what is needed to rebuild the same game (map, seed, squad size, frames) and the
plans, as applied: ``{"tick", "entity", "tier", "steps": [[action, arg, ...], ...]}``. Given to
``PlannerPlugin(replay=...)``, the planner applies exactly those plans at those ticks, so the same
game ends in the same state without a backend.

Recording files are input like any other: :func:`load_recording` bounds the file size and the
number of plans and checks every action against the registry (by lookup, never by attribute).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, Plan, Step
from aiplanner.components import Tier

__all__ = [
    "FORMAT_VERSION",
    "MAX_RECORDED_PLANS",
    "PlanRecorder",
    "RecordedPlan",
    "Recording",
    "RecordingError",
    "load_recording",
    "save_recording",
]

FORMAT_VERSION: Final = 1
MAX_RECORDED_PLANS: Final = 1_000_000
_MAX_FILE_BYTES: Final = 256 << 20

ReplaySchedule = dict[int, list[tuple[int, Plan, Tier]]]


class RecordingError(ValueError):
    """A recording file that cannot be read back; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class RecordedPlan:
    tick: int
    entity: int
    tier: Tier
    plan: Plan


@dataclass(frozen=True, slots=True)
class Recording:
    """A finished recording: the game's setup and every plan applied, in order."""

    map_name: str
    seed: int
    squad_size: int
    frames: int
    plans: tuple[RecordedPlan, ...]

    def schedule(self) -> ReplaySchedule:
        """tick -> [(entity, plan, tier)], the shape ``PlannerPlugin(replay=...)`` takes."""
        out: ReplaySchedule = {}
        for p in self.plans:
            out.setdefault(p.tick, []).append((p.entity, p.plan, p.tier))
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": FORMAT_VERSION,
                "map": self.map_name,
                "seed": self.seed,
                "squad_size": self.squad_size,
                "frames": self.frames,
                "plans": [
                    {
                        "tick": p.tick,
                        "entity": p.entity,
                        "tier": p.tier.value,
                        "steps": [[s.action, *s.args] for s in p.plan.steps],
                    }
                    for p in self.plans
                ],
            }
        )


class PlanRecorder:
    """Collects applied plans; pass :meth:`on_plan_applied` as the game's plan handler.

    Keeps at most ``max_plans`` (later ones are counted in ``dropped``), so memory stays bounded.
    """

    __slots__ = ("dropped", "max_plans", "plans")

    def __init__(self, max_plans: int = MAX_RECORDED_PLANS) -> None:
        self.plans: list[RecordedPlan] = []
        self.max_plans = max_plans
        self.dropped = 0

    def on_plan_applied(self, entity: int, plan: Plan, tier: Tier, tick: int) -> None:
        if len(self.plans) >= self.max_plans:
            self.dropped += 1
            return
        self.plans.append(RecordedPlan(tick=tick, entity=entity, tier=tier, plan=plan))

    def finish(self, *, map_name: str, seed: int, squad_size: int, frames: int) -> Recording:
        return Recording(map_name, seed, squad_size, frames, tuple(self.plans))


def save_recording(path: str | Path, recording: Recording) -> None:
    """Write ``recording`` as JSON. Raises ``OSError`` when the file cannot be written."""
    Path(path).write_bytes(recording.to_json())


def load_recording(path: str | Path, registry: ActionRegistry = DEFAULT_REGISTRY) -> Recording:
    """Read a recording written by :func:`save_recording`.

    Raises :class:`RecordingError` naming the file and entry for anything malformed, and
    ``OSError`` when the file cannot be read.
    """
    p = Path(path)
    with p.open("rb") as fh:
        raw = fh.read(_MAX_FILE_BYTES + 1)
    if len(raw) > _MAX_FILE_BYTES:
        raise RecordingError(f"{p}: larger than {_MAX_FILE_BYTES} bytes")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordingError(f"{p}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise RecordingError(f"{p}: expected a JSON object")
    if doc.get("version") != FORMAT_VERSION:
        raise RecordingError(f"{p}: version: expected {FORMAT_VERSION}, got {doc.get('version')!r}")
    map_name = doc.get("map")
    if not isinstance(map_name, str) or not map_name or len(map_name) > 1000:
        raise RecordingError(f"{p}: map: expected a map name")
    seed = _int(doc, "seed", p, lo=-(2**63), hi=2**63)
    squad_size = _int(doc, "squad_size", p, lo=1, hi=10_000)
    frames = _int(doc, "frames", p, lo=0, hi=2**40)
    entries = doc.get("plans")
    if not isinstance(entries, list):
        raise RecordingError(f"{p}: plans: expected a list")
    if len(entries) > MAX_RECORDED_PLANS:
        raise RecordingError(f"{p}: plans: more than {MAX_RECORDED_PLANS} entries")
    plans = tuple(_plan(entry, i, p, registry) for i, entry in enumerate(entries))
    return Recording(map_name, seed, squad_size, frames, plans)


def _int(doc: dict[str, object], key: str, p: Path | str, *, lo: int, hi: int) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RecordingError(f"{p}: {key}: expected an integer in {lo}..{hi}, got {value!r}")
    return value


def _plan(entry: object, i: int, p: Path, registry: ActionRegistry) -> RecordedPlan:
    where = f"{p}: plans[{i}]"
    if not isinstance(entry, dict):
        raise RecordingError(f"{where}: expected an object")
    tick = _int(entry, "tick", where, lo=0, hi=2**40)
    entity = _int(entry, "entity", where, lo=1, hi=2**40)
    tier_value = entry.get("tier")
    tiers = {t.value: t for t in Tier}
    if not isinstance(tier_value, str) or tier_value not in tiers:
        raise RecordingError(f"{where}: tier: expected one of {sorted(tiers)}, got {tier_value!r}")
    steps = entry.get("steps")
    if not isinstance(steps, list) or not 1 <= len(steps) <= registry.max_steps:
        raise RecordingError(f"{where}: steps: expected 1..{registry.max_steps} steps")
    return RecordedPlan(
        tick=tick,
        entity=entity,
        tier=tiers[tier_value],
        plan=Plan(tuple(_step(s, f"{where}.steps[{j}]", registry) for j, s in enumerate(steps))),
    )


def _step(raw: object, where: str, registry: ActionRegistry) -> Step:
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
        raise RecordingError(f"{where}: expected [action, arg, ...]")
    spec = registry.get(raw[0])
    if spec is None:
        raise RecordingError(f"{where}: unknown action {raw[0][:40]!r}")
    args: Sequence[object] = raw[1:]
    if len(args) != len(spec.args):
        raise RecordingError(
            f"{where}: {spec.name} takes {len(spec.args)} arguments, got {len(args)}"
        )
    out: list[int] = []
    for a, arg_spec in zip(args, spec.args, strict=True):
        if isinstance(a, bool) or not isinstance(a, int) or not -(2**31) <= a < 2**40:
            raise RecordingError(f"{where}: {spec.name}.{arg_spec.name}: expected an integer")
        out.append(a)
    return Step(spec.name, tuple(out))
