"""Speed of the embedded backend (llama.cpp in-process, SmolLM2-135M) on this machine.

Run: python benchmarks/embedded_speed.py [--repeat 3] [--threads 1 2]

Prints, for each thread count: model load time; time to first token with a cold prompt (a
system prompt never seen before) and a warm one (the same system prompt as the previous call, as
the planner sends it); decode speed with and without a grammar; the time of one compact plan.
Then one warm plan request three ways, to pick how the backend talks to llama-cpp-python:
``create_chat_completion`` (the GGUF's template), ``create_completion`` on a ChatML prompt
string, and EmbeddedBackend itself (ChatML built from tokens, ``Llama.generate``).

Figures are medians over ``--repeat`` runs. The machine is shared (the game, other processes):
read them as orders of magnitude and compare within one run. One model is loaded at a time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio

from aiplanner.actions import DEFAULT_REGISTRY
from aiplanner.backends import cpu_buffers
from aiplanner.backends.base import CompletionRequest, Finished, Message, TextDelta
from aiplanner.backends.embedded import EmbeddedBackend
from aiplanner.grammar import schema_to_gbnf
from aiplanner.model_path import resolve_model_path
from aiplanner.schema import compact_plan_schema

SYSTEM = (
    "You command one soldier in a grid battle game. Reply with JSON only, in the form "
    '{"plan":[[code,args...],...]} with one to four steps. Codes: M x y = move to cell x,y; '
    "A id = shoot the visible enemy id; C x y = run to the cover point x,y; R = reload; "
    "H id = heal the visible ally id; T x y = fall back to cell x,y; S = scan for enemies; "
    "W ticks = hold position. Prefer cover when hurt, reload when out of ammo, attack the "
    "nearest enemy in range otherwise."
)
USER = (
    '{"tick":120,"me":{"id":7,"role":"tactical","x":3,"y":4,"hp":60,"ammo":0,"in_cover":false},'
    '"enemies":[{"id":91,"x":6,"y":4,"hp":80,"dist":3.0},{"id":93,"x":9,"y":9,"hp":100,"dist":7.8}],'
    '"allies":[{"id":8,"x":2,"y":4,"hp":30}],"cover":[[4,7],[9,2]],"objective":[14,14]}'
)
PLAN_SCHEMA = compact_plan_schema(DEFAULT_REGISTRY, enemy_ids=[91, 93], ally_ids=[7, 8])
# Long, and it cannot stop early: a clean decode-speed figure under a grammar.
DIGITS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0, "maximum": 9},
    "minItems": 64,
    "maxItems": 64,
}
STORY = "Tell a long story about a soldier who crosses a river at night, in many details."


def _request(system: str, user: str, **kw: Any) -> CompletionRequest:
    kw.setdefault("timeout_s", 120.0)
    return CompletionRequest((Message("system", system), Message("user", user)), **kw)


async def _run(backend: EmbeddedBackend, request: CompletionRequest) -> Finished:
    async for event in backend.stream(request):
        if isinstance(event, Finished):
            return event
        assert isinstance(event, TextDelta)
    raise AssertionError("no Finished")


def _decode_rate(f: Finished) -> float:
    u = f.usage
    assert u.completion_tokens and u.total_s is not None and u.ttft_s is not None
    return (u.completion_tokens - 1) / max(u.total_s - u.ttft_s, 1e-9)


def _median(values: list[float]) -> float:
    return statistics.median(values)


async def measure_backend(threads: int, repeat: int) -> dict[str, float]:
    backend = EmbeddedBackend(n_threads=threads, engine="serial")
    try:
        await backend.load()
        assert backend.load_s is not None
        out: dict[str, float] = {"load_s": backend.load_s}
        cold, warm = [], []
        for i in range(repeat):
            # A system prompt never seen before: nothing of it is in the KV cache.
            f = await _run(
                backend, _request(f"Session {i}-{threads}. {SYSTEM}", USER, max_tokens=1)
            )
            cold.append(f.usage.ttft_s or 0.0)
            out["prompt_tokens"] = float(f.usage.prompt_tokens or 0)
            # The same system prompt, another snapshot: only the user message is evaluated.
            later = USER.replace('"tick":120', f'"tick":{121 + i}')
            f = await _run(
                backend, _request(f"Session {i}-{threads}. {SYSTEM}", later, max_tokens=1)
            )
            warm.append(f.usage.ttft_s or 0.0)
        out["ttft_cold_s"] = _median(cold)
        out["ttft_warm_s"] = _median(warm)
        free, constrained, plans, plan_tokens = [], [], [], []
        for _ in range(repeat):
            f = await _run(backend, _request(SYSTEM, STORY, max_tokens=128))
            free.append(_decode_rate(f))
            f = await _run(
                backend, _request(SYSTEM, "List 64 digits.", schema=DIGITS_SCHEMA, max_tokens=256)
            )
            constrained.append(_decode_rate(f))
            f = await _run(backend, _request(SYSTEM, USER, schema=PLAN_SCHEMA, max_tokens=64))
            plans.append(f.usage.total_s or 0.0)
            plan_tokens.append(float(f.usage.completion_tokens or 0))
        out["decode_free_tok_s"] = _median(free)
        out["decode_grammar_tok_s"] = _median(constrained)
        out["plan_warm_s"] = _median(plans)
        out["plan_tokens"] = _median(plan_tokens)
        return out
    finally:
        await backend.aclose()


def _time_first_and_total(chunks: Any, text_of: Callable[[Any], str]) -> tuple[float, float, str]:
    start = time.perf_counter()
    first = 0.0
    text = ""
    for chunk in chunks:
        piece = text_of(chunk)
        if piece and not first:
            first = time.perf_counter() - start
        text += piece
    return first, time.perf_counter() - start, text


def compare_call_styles(threads: int, repeat: int) -> dict[str, list[tuple[float, float]]]:
    """One warm compact plan three ways; (ttft, total) seconds per run.

    The styles take turns, each on a freshly loaded model (one at a time) in a thread of its own
    that ends with the run, so that the noise of a shared machine falls on all three alike.
    A thread of its own matters: llama.cpp runs on OpenMP here, and the idle OpenMP team of
    another thread that has decoded before slows the next decoding thread down (by a third and
    more, measured). EmbeddedBackend decodes on its own worker thread, which ends at ``aclose``.
    """
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

    grammar = LlamaGrammar.from_string(schema_to_gbnf(PLAN_SCHEMA), verbose=False)
    messages: list[Any] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER},
    ]
    chatml = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    chatml += "<|im_start|>assistant\n"
    options: dict[str, Any] = {
        "grammar": grammar,
        "max_tokens": 64,
        "temperature": 0.0,
        "seed": 0,
        "stream": True,
    }

    def with_llama(
        call: Callable[[Any], Any], text_of: Callable[[Any], str]
    ) -> tuple[float, float]:
        with cpu_buffers.loading():  # no AMX buffers where they crash
            llama = Llama(
                str(resolve_model_path()),
                n_ctx=2048,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        try:
            _time_first_and_total(call(llama), text_of)  # evaluate the prompt once: warm
            first, total, _text = _time_first_and_total(call(llama), text_of)
            return first, total
        finally:
            llama.close()

    async def ours() -> tuple[float, float]:
        backend = EmbeddedBackend(n_threads=threads, engine="serial")
        try:
            request = _request(SYSTEM, USER, schema=PLAN_SCHEMA, max_tokens=64)
            await _run(backend, request)  # load, and evaluate the prompt once: warm
            f = await _run(backend, request)
            return f.usage.ttft_s or 0.0, f.usage.total_s or 0.0
        finally:
            await backend.aclose()

    styles: dict[str, Callable[[], tuple[float, float]]] = {
        "create_chat_completion": lambda: with_llama(
            lambda llama: llama.create_chat_completion(messages, **options),
            lambda c: c["choices"][0]["delta"].get("content") or "",
        ),
        "create_completion (ChatML text)": lambda: with_llama(
            lambda llama: llama.create_completion(chatml, **options),
            lambda c: c["choices"][0]["text"] or "",
        ),
        "EmbeddedBackend (tokens + generate)": lambda: anyio.run(ours),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in styles}
    for _ in range(repeat):
        for name, run in styles.items():
            with ThreadPoolExecutor(max_workers=1) as pool:
                results[name].append(pool.submit(run).result())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"model: {resolve_model_path().name}")
    print(
        f"{'threads':>7} {'load s':>7} {'prompt tok':>10} {'ttft cold s':>11} {'ttft warm s':>11} "
        f"{'free tok/s':>10} {'grammar tok/s':>13} {'plan s':>7} {'plan tok':>8}"
    )
    for threads in args.threads:
        r = anyio.run(measure_backend, threads, args.repeat)
        print(
            f"{threads:>7} {r['load_s']:>7.3f} {r['prompt_tokens']:>10.0f} "
            f"{r['ttft_cold_s']:>11.3f} {r['ttft_warm_s']:>11.3f} "
            f"{r['decode_free_tok_s']:>10.1f} {r['decode_grammar_tok_s']:>13.1f} "
            f"{r['plan_warm_s']:>7.3f} {r['plan_tokens']:>8.0f}"
        )
    threads = args.threads[-1]
    print(f"\none warm compact plan, {threads} thread(s), same grammar, seconds:")
    print(f"  {'':<38} {'ttft':>7} {'total':>7} {'best':>7}")
    for name, runs in compare_call_styles(threads, args.repeat).items():
        ttft = _median([r[0] for r in runs])
        totals = [r[1] for r in runs]
        print(f"  {name:<38} {ttft:7.3f} {_median(totals):7.3f} {min(totals):7.3f}")


if __name__ == "__main__":
    main()
