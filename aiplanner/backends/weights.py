"""The weights the embedded engines load: the GGUF as given, or a converted copy kept on disk.

The default model ships as Q4_1. The matrix-matrix kernels llama.cpp took from llamafile speed
up prompts for F32, F16, Q8_0 and Q4_0 weights, not Q4_1: on this project's machine (2 AVX2
cores, ``benchmarks/weights.py``) Q4_1 evaluates 220-235 rows/s whether a decode holds 10 or 128
rows, its F16 copy 240 (10 rows) to 425-440 rows/s (64-128 rows), its Q8_0 copy 270-365. One row
at a time (generating a token) F16 is slower: 52 against 79 rows/s. A scored decision only
evaluates prompts, so for the default model the engines load the F16 copy (``weights="auto"``).
Widening is exact up to F16 rounding (the Q4_1 path rounds every activation to 8 bits), so a
candidate's score moves by float noise (0.1-0.5 nats summed over a phrase), not by a second
quantization as Q8_0 or Q4_0 would add.

A Q4_0 copy (``q4_0``, 87 MiB) is repacked by llama.cpp at load for its AVX2 kernels: one row at
a time it runs at 1.9x F16's rate, prompts at F16's; but in the engine benchmark a scored round
was slower and a free round no faster, and it decides worse (the model alone 39/66 sensible on
the scenario suite against 54/66 on F16: that second quantization); a choice, not a default
(README, "Q4_0 tried for the engines").

The copy is written once by llama.cpp's own ``llama_model_quantize`` (with ``allow_requantize``)
into the cache folder (``$AIPLANNER_CACHE_DIR``, else ``$XDG_CACHE_HOME/aiplanner``, else
``~/.cache/aiplanner``), named after the source's path, size and modification time, under a
temporary name renamed into place, so two processes (or threads) converting at once both end
with a whole file. A copy that cannot be made (read-only folder, full disk) is not an error: the
engine logs a warning and loads the file as given: slower, with the shipped file's own scores.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Final, Literal, get_args

from aiplanner.errors import ConfigError

__all__ = ["CACHE_ENV_VAR", "WEIGHTS", "Weights", "cache_dir", "converted_path", "prepare_weights"]

Weights = Literal["auto", "as-is", "f16", "q8_0", "q4_0"]
WEIGHTS: Final[tuple[str, ...]] = get_args(Weights)
CACHE_ENV_VAR: Final = "AIPLANNER_CACHE_DIR"

_log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where converted weights are kept (see the module docstring)."""
    chosen = os.environ.get(CACHE_ENV_VAR)
    if chosen:
        return Path(chosen).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "aiplanner"


def check_weights(weights: str) -> Weights:
    """``weights`` if it is one of :data:`WEIGHTS`; raises :class:`ConfigError` otherwise."""
    for known in WEIGHTS:
        if weights == known:
            return known  # type: ignore[return-value]
    raise ConfigError(f"unknown weights {weights!r}; choose {WEIGHTS}")


def wanted(weights: Weights, *, default_model: bool) -> str | None:
    """The type to convert to (``"f16"``, ``"q8_0"``, ``"q4_0"``), or None to load the file as
    given.

    ``auto`` widens the default model only: its speed-up was measured here; another GGUF is
    loaded as the user made it.
    """
    if weights == "auto":
        return "f16" if default_model else None
    return None if weights == "as-is" else weights


def converted_path(source: Path, kind: str, folder: Path) -> Path:
    """The cached copy of ``source`` converted to ``kind``: a new source file (another path,
    size or modification time) gets a new name, so a stale copy is never loaded."""
    st = source.stat()
    key = f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
    digest = hashlib.sha256(key).hexdigest()[:16]
    return folder / f"{source.stem}.{digest}.{kind}.gguf"


def prepare_weights(
    source: Path,
    kind: str | None,
    *,
    n_threads: int = 2,
    folder: Path | None = None,
    verbose: bool = False,
) -> Path:
    """The file to load: ``source`` itself when ``kind`` is None, else its copy converted to
    ``kind``, made now if it is not in ``folder`` (default :func:`cache_dir`) yet.

    Falls back to ``source`` with a logged warning when the copy cannot be made. llama.cpp's
    report of the conversion is printed only when ``verbose``.
    """
    if kind is None:
        return source
    folder = cache_dir() if folder is None else folder
    try:
        target = converted_path(source, kind, folder)
        if not target.is_file():
            _convert(source, target, kind, n_threads, verbose)
            _log.info("made the %s copy of %s once: %s", kind, source.name, target)
    except (OSError, RuntimeError) as exc:
        _log.warning("loading %s as given: could not make its %s copy (%s)", source, kind, exc)
        return source
    return target


def _convert(source: Path, target: Path, kind: str, n_threads: int, verbose: bool) -> None:
    import ctypes

    import llama_cpp
    from llama_cpp import Llama  # noqa: F401  (installs llama-cpp-python's log callback)

    # The callback prints what its logger's level lets through; Llama(verbose=...) sets it too.
    logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if verbose else logging.ERROR)

    ftypes = {
        "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
        "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    # A name of this process's and thread's: two engines loading at once each write their own.
    partial = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.part")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[kind]
    params.allow_requantize = True
    params.nthread = n_threads
    try:
        code = llama_cpp.llama_model_quantize(
            str(source).encode(), str(partial).encode(), ctypes.byref(params)
        )
        if code != 0 or not partial.is_file():
            raise RuntimeError(f"llama_model_quantize returned {code}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
