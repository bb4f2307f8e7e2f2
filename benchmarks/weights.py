"""How fast llama.cpp evaluates rows of the default model with each kind of weights.

Run (timings go under the bench lock; the load average is printed at the start and end):

    flock /tmp/aiplanner-bench.lock .venv/bin/python benchmarks/weights.py
        [--weights as-is f16 q8_0 mixed q4_0 iq4_nl] [--rows 1 10 32 64 128] [--threads 2]
        [--repeat 7] [--no-adapter | --no-merge]

For each kind of weights (:mod:`aiplanner.backends.weights`: ``as-is`` is the shipped Q4_1 file,
the others its converted copies in the cache folder, made here if missing, with the shipped LoRA
adapter merged into them as the engines load them, or applied on the context with ``--no-merge``;
``auto`` is the default's kind), one context like the batched engine's (16 sequences, flash
attention off) evaluates ``rows`` tokens in one ``llama_decode`` (spread over sequences of up to
128 tokens, logits on every 16th row, as a scored round asks for a few), ``--repeat`` times each;
it prints the best and the median rows/s. One row at a time is what generating a token costs; 10
rows, one step of ten agents generating together; 64-128, a prompt or a pass of scoring. The kinds
take turns per size, so a change in the machine's speed falls on all of them alike.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from engine import load  # the load average as the engine benchmark prints it

from aiplanner.adapters import default_adapter
from aiplanner.backends import cpu_buffers
from aiplanner.backends.lora import apply_adapter
from aiplanner.backends.weights import check_weights, prepare_model, wanted
from aiplanner.model_path import default_model_path

_SEQ_TOKENS = 128


class Probe:
    """One model and context, ready to decode rows of made-up tokens."""

    def __init__(self, path: Path, threads: int, adapter: Path | None) -> None:
        import llama_cpp
        from llama_cpp import Llama  # noqa: F401  (installs llama-cpp-python's log callback)

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # quiet, as Llama() is
        self._lib = llama_cpp
        self.model = llama_cpp.llama_model_load_from_file(
            str(path).encode(), cpu_buffers.model_params()
        )
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = 4096
        params.n_batch = params.n_ubatch = 512
        params.n_seq_max = 16
        params.n_threads = params.n_threads_batch = threads
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if adapter is not None:
            apply_adapter(self.model, self.ctx, adapter)
        self.batch = llama_cpp.llama_batch_init(512, 0, 16)

    def rate(self, rows: int) -> float:
        """Rows/s of one decode of ``rows`` tokens on a cleared cache."""
        lib, batch = self._lib, self.batch
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        batch.n_tokens = rows
        for i in range(rows):
            batch.token[i] = 100 + (i * 7) % 1000
            batch.pos[i] = i % _SEQ_TOKENS
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = i // _SEQ_TOKENS
            batch.logits[i] = 1 if i % 16 == 15 or i == rows - 1 else 0
        started = time.perf_counter()
        if lib.llama_decode(self.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        return rows / (time.perf_counter() - started)

    def close(self) -> None:
        lib: Any = self._lib
        lib.llama_batch_free(self.batch)
        lib.llama_free(self.ctx)
        lib.llama_model_free(self.model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", nargs="+", default=["as-is", "f16", "q8_0"])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 10, 32, 64, 128])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-adapter", action="store_true")
    parser.add_argument("--no-merge", action="store_true", help="the adapter on the context")
    args = parser.parse_args()
    source = default_model_path()
    adapter = None if args.no_adapter else default_adapter()
    print(f"model={source.name} adapter={adapter.name if adapter else None} {load()}")
    probes: dict[str, Probe] = {}
    for name in args.weights:
        kind = wanted(check_weights(name), default_model=True)
        path, lora = prepare_model(
            source, kind, adapter, merge=not args.no_merge, n_threads=args.threads
        )
        on = f" + {lora.name} on the context" if lora else ""
        print(f"{name:>6}: {path.name} ({path.stat().st_size / 2**20:.0f} MiB){on}")
        probes[name] = Probe(path, args.threads, lora)
    try:
        for rows in args.rows:
            rates: dict[str, list[float]] = {name: [] for name in probes}
            for _ in range(args.repeat):
                for name, probe in probes.items():
                    rates[name].append(probe.rate(rows))
            base = statistics.median(rates[args.weights[0]])
            for name, got in rates.items():
                med = statistics.median(got)
                print(
                    f"rows={rows:4d} {name:>6}: best {max(got):6.0f} median {med:6.0f} rows/s "
                    f"(x{med / base:4.2f} of {args.weights[0]})",
                    flush=True,
                )
    finally:
        for probe in probes.values():
            probe.close()
    print(load())


if __name__ == "__main__":
    main()
