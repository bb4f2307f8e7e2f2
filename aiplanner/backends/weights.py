"""The weights the embedded engines load: the GGUF as given, or a converted copy kept on disk.

The default model ships as Q4_1. The matrix-matrix kernels llama.cpp took from llamafile speed up
prompts for F32, F16, Q8_0 and Q4_0 weights, not Q4_1: on this project's machine (2 AVX2 cores,
``benchmarks/weights.py``) Q4_1 evaluates 220-235 rows/s whether a decode holds 10 or 128 rows, its
F16 copy 240 (10 rows) to 425-440 rows/s (64-128 rows), its Q8_0 copy 270-365. One row at a time
(generating a token) F16 is slower: 52 against 79 rows/s. A scored decision only evaluates prompts,
so for the default model the engines first loaded the F16 copy; once the shipped adapter was merged
into the weights (below), a Q8_0 copy of the *merged* weights beat it on every machine this project
was measured on: +3-10% rows/s on one, +19-29% on a slower AVX2-only one (3 December,
``benchmarks/weights.py``: 354 against 297 rows/s at 128 rows in one decode, 263 against 203 at
10), one row at a time 91 against 64, and it decided as well (the scenario suite guided by score
54/66 sensible against 51/66, the model alone 53 against 54). So ``weights="auto"`` loads that
copy: 138 MiB against 258. Widening to F16 is exact up to F16 rounding (the Q4_1 path rounds every
activation to 8 bits), so a candidate's score moves by float noise (0.1-0.5 nats summed over a
phrase); Q8_0 adds a second rounding of the weights (8 bits a weight, a scale per 32), which moves
a score by about as much (``benchmarks/RESULTS.md``, "A Q8_0 copy of the merged weights").

A Q4_0 copy (``q4_0``, 87 MiB) is repacked by llama.cpp at load for its AVX2 kernels: one row at
a time it runs at 1.9x F16's rate, prompts at F16's; but in the engine benchmark a scored round
was slower and a free round no faster, and it decides worse (the model alone 39/66 sensible on
the scenario suite against 54/66 on F16: that second quantization); a choice, not a default
(``benchmarks/RESULTS.md``, "Q4_0 tried for the engines").

An IQ4_NL copy (``iq4_nl``, 88 MiB: 4 bits a weight on a non-uniform grid, a scale per 32; the
first layers' ``ffn_down`` at Q5_K and the token embedding at Q8_0, as llama.cpp's mix has it)
is the choice for speed: as fast as Q4_0 here (128 rows in one decode 438 against Q8_0's 381
rows/s, +15%; in the live 10v10 demo 384-410 against 339-358 rows/s) and it decides nearer
Q8_0 (the scenario suite guided by score 53/66 sensible against 54/66, the model alone 50/66
against 53/66, where Q4_0 gave 50 and 44; ``benchmarks/RESULTS.md``, "IQ4_NL weights").
Between the two, ``mixed`` (113 MiB) is Q8_0 but for the feed-forward gate and up matrices
(:data:`MIXED_OVERRIDES`), which are IQ4_NL: +9% rows/s at 64-128 rows, the scenario suite
54/66 and 54/66, but it moves a candidate's score from the F16 copy's by 0.82 nats (median;
Q8_0 0.14), so close calls go the other way more often ("Mixed weights"). It needs a
llama-cpp-python whose ``llama_model_quantize`` takes tensor overrides (0.3.36 does); with one
that does not, the file is loaded as given, with a warning.

The copy is written once by llama.cpp's own ``llama_model_quantize`` (with ``allow_requantize``)
into the cache folder (``$AIPLANNER_CACHE_DIR``, else ``$XDG_CACHE_HOME/aiplanner``, else
``~/.cache/aiplanner``), named after the source's path, size and modification time, under a
temporary name renamed into place, so two processes (or threads) converting at once both end
with a whole file. A copy that cannot be made (read-only folder, full disk) is not an error: the
engine logs a warning and loads the file as given: slower, with the shipped file's own scores.

A LoRA adapter is merged into an F16 copy (:func:`prepare_model`): llama.cpp applies an adapter
on a context as two more small matrix products beside every matrix it adapts, which cost the
default model with the shipped adapter 10-12% of its prompt rate here (``benchmarks/weights.py
--weights f16`` with and without ``--no-adapter``: 552-565 against 611-626 rows/s at 128 rows);
the merged copy's weights are ``W + scale * B @ A`` (as llama.cpp scales: ``alpha / rank`` times
the adapter's scale), computed in float32 and rounded once to F16, so scores move by float noise
only. It is made once beside the F16 copy, named after the model, the adapter and the scale; an
adapter that cannot be merged (not a LoRA of plain matrices, shapes that do not fit, numpy
missing) is applied on the context as before, with a warning. A Q8_0 (or 4-bit) copy with the
adapter merged is quantized by ``llama_model_quantize`` from the merged F16 weights: from the
cached F16 merge when there is one, else from a temporary one deleted once the copy is made.

Old copies do not pile up: each copy is 138 (Q8_0) or 258 MiB (F16) for the default model, and
a new source file, a retrained adapter or another scale each make a new one. When a copy is made,
the copies of the same family (the same source name and kind, or the same source name, kind and
adapter name) beyond the
:data:`KEEP_COPIES` most recently used are deleted; a copy that is used is touched, so it counts
as recent. Alternating between two variants (two scales of one adapter) makes nothing twice;
three or more of one family are made again in turn. A copy in use by another process on Linux
stays readable after its deletion (the file lives on until it is closed).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import mmap
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Final, Literal, get_args

from aiplanner.backends.gguf_layout import GGML_F16, GGML_F32, TensorInfo, read_layout
from aiplanner.backends.llama_logs import llama_errors, reason, set_llama_log_level
from aiplanner.errors import ConfigError

__all__ = [
    "CACHE_ENV_VAR",
    "KEEP_COPIES",
    "MIXED_OVERRIDES",
    "WEIGHTS",
    "Weights",
    "cache_dir",
    "converted_path",
    "merge_adapter",
    "merged_path",
    "prepare_model",
    "prepare_weights",
]

Weights = Literal["auto", "as-is", "f16", "q8_0", "mixed", "q4_0", "iq4_nl"]
WEIGHTS: Final[tuple[str, ...]] = get_args(Weights)
CACHE_ENV_VAR: Final = "AIPLANNER_CACHE_DIR"

_log = logging.getLogger(__name__)

KEEP_COPIES: Final = 2
"""Copies kept per family in the cache folder (see the module docstring)."""

_DIGEST_CHARS: Final = 16  # hex digits of the digest in a cached copy's name
_DIGEST_GLOB: Final = "?" * _DIGEST_CHARS


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


MIXED_OVERRIDES: Final = (("ffn_(gate|up)", "IQ4_NL"),)
"""The ``mixed`` kind: Q8_0 but for the tensors whose names these patterns match (regular
expressions, searched as llama.cpp's ``llama_model_quantize`` does), in the type named."""


def wanted(weights: Weights, *, default_model: bool) -> str | None:
    """The kind to convert to (``"f16"``, ``"q8_0"``, ``"mixed"``, ``"q4_0"``, ``"iq4_nl"``), or
    None to load the file as given.

    ``auto`` makes a Q8_0 copy of the default model only (its adapter merged in: see
    :func:`prepare_model`): its speed-up and its decisions were measured here; another GGUF is
    loaded as the user made it.
    """
    if weights == "auto":
        return "q8_0" if default_model else None
    return None if weights == "as-is" else weights


def converted_path(source: Path, kind: str, folder: Path) -> Path:
    """The cached copy of ``source`` converted to ``kind``: a new source file (another path,
    size or modification time) gets a new name, so a stale copy is never loaded."""
    digest = hashlib.sha256(_identity(source).encode()).hexdigest()[:_DIGEST_CHARS]
    return folder / _copy_name(source.stem, digest, kind)


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
        if target.is_file():
            _touch(target)
        else:
            _convert(source, target, kind, n_threads, verbose)
            _log.info("made the %s copy of %s once: %s", kind, source.name, target)
            _prune(folder, source.stem, kind)
    except (OSError, RuntimeError) as exc:
        _log.warning("loading %s as given: could not make its %s copy (%s)", source, kind, exc)
        return source
    return target


def _convert(source: Path, target: Path, kind: str, n_threads: int, verbose: bool) -> None:
    import ctypes

    import llama_cpp

    set_llama_log_level(verbose)

    ftypes = {
        "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
        "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        "mixed": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
        "iq4_nl": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_NL,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = _private(target, "part")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[kind]
    params.allow_requantize = True
    params.nthread = n_threads
    overrides = None  # kept alive until llama_model_quantize returns
    if kind == "mixed":
        # Tensor overrides (llama_model_tensor_override, tt_overrides): 0.3.36 has them.
        entry = getattr(llama_cpp, "llama_model_tensor_override", None)
        if entry is None or "tt_overrides" not in {f[0] for f in type(params)._fields_}:
            raise RuntimeError("this llama-cpp-python cannot choose a tensor's type")
        overrides = (entry * (len(MIXED_OVERRIDES) + 1))()  # ends with a null pattern
        for i, (pattern, type_name) in enumerate(MIXED_OVERRIDES):
            overrides[i].pattern = pattern.encode()
            overrides[i].type = getattr(llama_cpp, f"GGML_TYPE_{type_name}")
        params.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(entry))
    try:
        with llama_errors() as errors:  # llama.cpp logs why it fails, returns only 1
            code = llama_cpp.llama_model_quantize(
                str(source).encode(), str(partial).encode(), ctypes.byref(params)
            )
        if code != 0 or not partial.is_file():
            raise RuntimeError(f"llama_model_quantize returned {code}{reason(errors)}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def merged_path(source: Path, adapter: Path, scale: float, folder: Path, kind: str = "f16") -> Path:
    """The cached copy of ``source`` with ``adapter`` merged in at ``scale``, as ``kind``
    (``f16``, or a quantized kind made from the merged F16 weights): a new model, adapter or
    scale gets a new name."""
    key = "|".join([_identity(source), _identity(adapter), repr(scale)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:_DIGEST_CHARS]
    return folder / _copy_name(source.stem, digest, _merged_kind(adapter, kind))


def prepare_model(
    source: Path,
    kind: str | None,
    adapter: Path | None,
    scale: float = 1.0,
    *,
    merge: bool = True,
    n_threads: int = 2,
    folder: Path | None = None,
    verbose: bool = False,
) -> tuple[Path, Path | None]:
    """The file to load and the adapter still to apply on the context (None: none, or merged).

    As :func:`prepare_weights`; and when a copy is asked for (``kind`` not None), ``adapter`` is
    given and ``merge`` is set, the adapter merged into the weights (:func:`merge_adapter`, into
    the F16 copy), made once into ``folder``: as F16 for ``f16``, else quantized to ``kind``
    from the merged F16 weights (which are not kept unless ``f16`` asked for them). An adapter
    that cannot be merged is returned to be applied on the plain ``kind`` copy, with a logged
    warning.
    """

    def plain() -> tuple[Path, Path | None]:  # the kind asked for, the adapter on the context
        path = prepare_weights(source, kind, n_threads=n_threads, folder=folder, verbose=verbose)
        return path, adapter

    if adapter is None or not merge or kind is None:
        return plain()
    folder = cache_dir() if folder is None else folder
    try:
        target = merged_path(source, adapter, scale, folder, kind)
        if target.is_file():  # made before: the plain F16 copy it came from is not needed
            _touch(target)
        else:
            f16 = prepare_weights(
                source, "f16", n_threads=n_threads, folder=folder, verbose=verbose
            )
            if f16 == source:  # no copy could be made: nothing to merge into
                return source, adapter
            _merge_as(
                kind,
                f16,
                merged_path(source, adapter, scale, folder),
                adapter,
                scale,
                target,
                n_threads,
                verbose,
            )
            _log.info(
                "merged %s into a %s copy of %s once: %s", adapter.name, kind, source.name, target
            )
            _prune(folder, source.stem, _merged_kind(adapter, kind))
    except (OSError, ValueError, ImportError, RuntimeError) as exc:
        _log.warning("applying %s on the context: could not merge it (%s)", adapter.name, exc)
        return plain()
    return target, None


def _merge_as(
    kind: str,
    f16: Path,
    merged_f16: Path,
    adapter: Path,
    scale: float,
    target: Path,
    n_threads: int,
    verbose: bool,
) -> None:
    """Write ``target``: ``adapter`` merged into ``f16``, as ``kind``. A quantized kind starts
    from ``merged_f16`` when that F16 merge is already cached, else from a temporary one."""
    if kind == "f16":
        merge_adapter(f16, adapter, scale, target)
        return
    if merged_f16.is_file():
        _convert(merged_f16, target, kind, n_threads, verbose)
        return
    temporary = _private(target, "f16")
    try:
        merge_adapter(f16, adapter, scale, temporary)
        _convert(temporary, target, kind, n_threads, verbose)
    finally:
        temporary.unlink(missing_ok=True)


def merge_adapter(f16: Path, adapter: Path, scale: float, target: Path) -> None:
    """Write ``target``: the F16 model ``f16`` with the LoRA ``adapter`` merged in at ``scale``.

    Every adapted matrix ``W`` (F16, ``n_out`` x ``n_in``) becomes ``W + s * B @ A``, where
    ``A`` (``rank`` x ``n_in``) and ``B`` (``n_out`` x ``rank``) are the adapter's ``lora_a``
    and ``lora_b`` and ``s`` is ``scale * alpha / rank`` (``scale`` when the adapter has no
    alpha), as llama.cpp applies them; the other tensors and the metadata are copied as they
    are. Written under a temporary name and renamed into place.

    Raises :class:`ValueError` for an adapter that is not a LoRA of matrices this model has in
    F16 with fitting shapes, or whose merged weights overflow F16; :class:`OSError` when a file
    cannot be read or written; :class:`ImportError` without numpy.
    """
    import numpy as np

    lora = read_layout(adapter)
    if lora.metadata.get("adapter.type") != "lora" or any(
        key.startswith("adapter.alora") for key in lora.metadata
    ):
        raise ValueError(f"{adapter.name} is not a plain LoRA adapter")
    alpha = lora.metadata.get("adapter.lora.alpha", 0.0)
    if not isinstance(alpha, float | int) or isinstance(alpha, bool):
        raise ValueError(f"{adapter.name}: bad adapter.lora.alpha {alpha!r}")
    model = read_layout(f16)
    arch = model.metadata.get("general.architecture")
    if lora.metadata.get("general.architecture") != arch:
        raise ValueError(f"{adapter.name} is not an adapter for a {arch} model")
    pairs: list[tuple[TensorInfo, TensorInfo, TensorInfo]] = []
    for name, a in lora.tensors.items():
        if not name.endswith(".lora_a"):
            if not name.endswith(".lora_b"):
                raise ValueError(f"{adapter.name}: unexpected tensor {name!r}")
            continue
        base = name.removesuffix(".lora_a")
        b = lora.tensors.get(base + ".lora_b")
        w = model.tensors.get(base)
        if b is None or w is None:
            raise ValueError(
                f"{adapter.name}: {base!r} has no lora_b, or the model has no {base!r}"
            )
        if w.ggml_type != GGML_F16 or len(w.ne) != 2:
            raise ValueError(f"{base!r} is not an F16 matrix in {f16.name}")
        for t in (a, b):
            if t.ggml_type not in (GGML_F16, GGML_F32) or len(t.ne) != 2:
                raise ValueError(f"{adapter.name}: {base!r}'s LoRA is not F16/F32 matrices")
        n_in, n_out = w.ne
        if a.ne[0] != n_in or b.ne[1] != n_out or a.ne[1] != b.ne[0]:
            raise ValueError(f"{adapter.name}: {base!r}'s LoRA does not fit its shape")
        pairs.append((w, a, b))
    if not pairs:
        raise ValueError(f"{adapter.name} adapts no tensor")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = _private(target, "part")
    try:
        shutil.copyfile(f16, partial)
        with (
            adapter.open("rb") as af,
            mmap.mmap(af.fileno(), 0, access=mmap.ACCESS_READ) as abuf,
            partial.open("r+b") as wf,
            mmap.mmap(wf.fileno(), 0, access=mmap.ACCESS_WRITE) as wbuf,
        ):
            for w, a, b in pairs:
                rank = a.ne[1]
                s = scale * float(alpha) / rank if alpha else scale
                delta = _array(np, abuf, b).astype(np.float32) @ _array(np, abuf, a).astype(
                    np.float32
                )
                old = _array(np, wbuf, w).astype(np.float32)  # copies: no view outlives the map
                merged = (old + np.float32(s) * delta).astype(np.float16)
                if not np.isfinite(merged).all():
                    raise ValueError(f"merging {adapter.name} overflows F16")
                _array(np, wbuf, w)[...] = merged
            wbuf.flush()
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _array(np: Any, buf: mmap.mmap, t: TensorInfo) -> Any:
    """A numpy view of tensor ``t`` in ``buf`` (writable if the buffer is)."""
    dtype = np.float16 if t.ggml_type == GGML_F16 else np.float32
    return np.frombuffer(buf, dtype=dtype, count=t.n_elements, offset=t.offset).reshape(t.shape)


def _identity(path: Path) -> str:
    """A file as the cached copies' names know it: where it is, its size and its modification
    time (a changed file gets new copies)."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _private(target: Path, suffix: str) -> Path:
    """A file beside ``target`` of this process's and thread's, for work in progress: two engines
    loading at once each write their own, and its leading dot keeps it out of pruning."""
    return target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.{suffix}")


def _touch(path: Path) -> None:
    """Mark a cached copy as used now (its modification time), so pruning keeps it."""
    with contextlib.suppress(OSError):  # a read-only cache: still used, only not marked
        os.utime(path)


def _copy_name(stem: str, digest: str, kind: str) -> str:
    """A cached copy's file name: the source's stem, the digest of what it was made from, what
    it is (``f16``, ``q8_0``, ``f16+<adapter stem>``)."""
    return f"{stem}.{digest}.{kind}.gguf"


def _merged_kind(adapter: Path, kind: str = "f16") -> str:
    return f"{kind}+{adapter.stem}"


def _prune(folder: Path, stem: str, kind: str) -> None:
    """Delete the copies of ``stem`` as ``kind`` in ``folder`` (any digest) beyond the
    :data:`KEEP_COPIES` most recently used (partial files, named with a leading dot, never
    match). A copy that cannot be deleted or that vanished meanwhile is left to the next
    prune."""
    pattern = _copy_name(glob.escape(stem), _DIGEST_GLOB, glob.escape(kind))
    found: list[tuple[int, Path]] = []
    for path in folder.glob(pattern):
        try:
            found.append((path.stat().st_mtime_ns, path))
        except OSError:
            continue
    found.sort(reverse=True)
    for _, path in found[KEEP_COPIES:]:
        try:
            path.unlink()
        except OSError:
            continue
        _log.info("deleted an older cached copy: %s", path)
