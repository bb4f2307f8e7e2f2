"""Suite ``tokens``: prompt and answer sizes in the embedded model's own tokens.

For four situations a demo battle produces, the input tokens per agent of each prompt tier
(``full``/``compressed``) and mode (``guided``/``free``), alone and packed four to a prompt, and
the output tokens of typical answers. Goals from the design: compressed input at least 5x smaller
than full; a 2-step compact plan at most 20 tokens. Only the tokenizer is loaded
(``vocab_only=True``): no inference, a fraction of a second. Token counts are exact, so each
figure is measured once.
"""

from __future__ import annotations

from statistics import mean

import orjson

from aiplanner.actions import DEFAULT_REGISTRY, Plan, Step
from aiplanner.backends.base import Message
from aiplanner.bench.options import BenchOptions, Plot, Series, SuiteResult
from aiplanner.bench.progress import Progress
from aiplanner.bench.stats import Metric, metric
from aiplanner.codec import PlanCodec
from aiplanner.components import Battlefield
from aiplanner.errors import ModelNotFoundError
from aiplanner.model_path import resolve_model_path
from aiplanner.prompts import PromptBuilder
from aiplanner.requests import PlanRequest
from aiplanner.snapshot import SeenUnit, SelfView, WorldSnapshot

__all__ = ["TokenCounter", "run", "scenarios"]

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


class TokenCounter:
    """Counts tokens as the model sees them: ChatML-wrapped messages, special tokens parsed.

    Raises ImportError without llama-cpp-python, ModelNotFoundError without the model file.
    """

    def __init__(self, model: str | None) -> None:
        import llama_cpp  # optional dependency: imported only when counting

        path = resolve_model_path(model)
        self._llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        self.path = path

    def text(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=True))

    def message(self, msg: Message) -> int:
        return self.text(f"<|im_start|>{msg.role}\n{msg.content}<|im_end|>\n")


def _answers() -> dict[str, str]:
    free = PlanCodec(DEFAULT_REGISTRY, mode="free")
    guided = PlanCodec(DEFAULT_REGISTRY, mode="guided")
    two = _plan(("MoveTo", (3, 4)), ("Attack", (91,)))
    verbose = orjson.dumps(
        {"steps": [{"act": "MoveTo", "x": 3, "y": 4}, {"act": "Attack", "target_id": 91}]}
    ).decode()
    return {
        "2-step plan, verbose": verbose,
        "2-step plan, compact": free.encode(two),
        "guided answer": guided.encode_choice(1),
        "packed guided, 2 agents": "["
        + ",".join(guided.encode_element(e, i) for e, i in ((12, 0), (15, 2)))
        + "]",
        "packed free, 2 agents": "["
        + ",".join(free.encode_element(e, two) for e in (12, 15))
        + "]",
    }


def run(opts: BenchOptions, progress: Progress) -> SuiteResult:
    """Count the tokens; skipped where llama-cpp-python or the model file is missing."""
    try:
        count = TokenCounter(opts.model if opts.backend == "embedded" else None)
    except ImportError:
        return {"skipped": "llama-cpp-python is not installed (pip install 'aiplanner[embedded]')"}
    except ModelNotFoundError as exc:
        return {"skipped": str(exc)}
    reqs = scenarios()
    metrics: dict[str, Metric] = {}
    per_agent: dict[str, Series] = {}
    for mode in progress.track(("guided", "free"), "tokens", 2):
        sizes: list[float] = []
        for tier in ("full", "compressed"):
            b = PromptBuilder(DEFAULT_REGISTRY, tier=tier, mode=mode)
            system = count.message(b.messages(reqs[0])[0])
            user = mean(count.message(b.messages(r)[1]) for r in reqs)
            packed = sum(count.message(m) for m in b.packed_messages(reqs)) / len(reqs)
            metrics[f"input tokens per agent, {mode} {tier}"] = metric([system + user], "tokens")
            metrics[f"input tokens per agent, {mode} {tier}, packed x4"] = metric(
                [packed], "tokens"
            )
            sizes.append(system + user)
        per_agent[mode] = Series(x=["full", "compressed"], y=sizes)
        metrics[f"full / compressed, {mode}"] = metric([sizes[0] / sizes[1]], "x", "higher")
    for label, text in _answers().items():
        metrics[f"output tokens, {label}"] = metric([count.text(text)], "tokens")
    plot = Plot(
        name="tokens",
        kind="bar",
        title="Input tokens per agent by prompt tier",
        xlabel="prompt tier",
        ylabel="tokens (ChatML-wrapped)",
        series=per_agent,
    )
    return {"metrics": metrics, "plots": [plot], "info": {"tokenizer": count.path.name}}
