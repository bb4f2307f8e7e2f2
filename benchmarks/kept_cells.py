"""What other sequences' cells in the shared KV cache cost a prompt's rows (the batched engine's
unified cache), with flash attention on and off.

Run (timings go under the bench lock):

    flock /tmp/aiplanner-bench.lock .venv/bin/python benchmarks/kept_cells.py [--threads 2]
        [--others 0 1000 2000 3000] [--tries 4]

One context as the batched engine makes it (4,096 cells, 64 sequences, one cache for all of
them) on the default model's F16 copy. Other sequences are filled with 100-token prompts until
they hold ``--others`` cells; then a fresh 128-token prompt of sequence 0 is decoded (its cells
removed again between tries) and the fastest of ``--tries`` is printed. Every row is masked from
the other sequences' cells, but llama.cpp's CPU attention still walks all of them: this is the
price each kept prompt (``EngineSettings.prefix_cache``) or kept root puts on every later row.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import llama_cpp

from aiplanner.backends import cpu_buffers
from aiplanner.backends.weights import prepare_weights
from aiplanner.model_path import default_model_path

ROWS = 128
FILL = 100


def _decode(ctx: Any, batch: Any, seq: int, start: int, n: int) -> float:
    batch.n_tokens = n
    for i in range(n):
        batch.token[i] = 100 + (i * 7 + seq) % 3000
        batch.pos[i] = start + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = i == n - 1
    started = time.perf_counter()
    if llama_cpp.llama_decode(ctx, batch) != 0:
        raise RuntimeError("llama_decode failed")
    return time.perf_counter() - started


def measure(model: Any, flash: bool, others: list[int], threads: int, tries: int) -> list[float]:
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 4096, 512, 512, 64
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified, params.no_perf = True, True
    on, off = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED, llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.flash_attn_type = on if flash else off
    ctx = llama_cpp.llama_init_from_model(model, params)
    batch = llama_cpp.llama_batch_init(512, 0, 64)
    mem = llama_cpp.llama_get_memory(ctx)
    best: list[float] = []
    try:
        filled = 1
        for target in others:
            while (filled - 1) * FILL < target:
                _decode(ctx, batch, filled, 0, FILL)
                filled += 1
            times = []
            for _ in range(tries):
                llama_cpp.llama_memory_seq_rm(mem, 0, -1, -1)
                times.append(_decode(ctx, batch, 0, 0, ROWS))
            best.append(min(times))
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--others", type=int, nargs="+", default=[0, 1000, 2000, 3000])
    p.add_argument("--tries", type=int, default=4)
    args = p.parse_args()
    if max(args.others) + ROWS > 4096 - FILL or min(args.others) < 0:
        p.error("--others must be within 0..3868 cells")
    path = prepare_weights(default_model_path(), "f16", n_threads=args.threads)
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), cpu_buffers.model_params())
    if not model:
        raise SystemExit(f"could not load {path}")
    try:
        print(f"model={path.name} threads={args.threads} rows={ROWS}")
        for flash in (True, False):
            best = measure(model, flash, args.others, args.threads, args.tries)
            pairs = zip(args.others, best, strict=True)
            cells = "  ".join(f"{n:>5} other cells: {1000 * s:5.0f} ms" for n, s in pairs)
            print(f"flash attention {'on ' if flash else 'off'}  {cells}", flush=True)
    finally:
        llama_cpp.llama_model_free(model)


if __name__ == "__main__":
    main()
