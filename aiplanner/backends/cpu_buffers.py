"""Loading a model without llama.cpp's extra CPU buffer types where they crash.

llama.cpp keeps some weights in *extra* buffer types of the CPU backend: ``AMX`` (on CPUs with
Intel AMX, for Q4_0, Q4_1, Q8_0 and some K-quants) and ``CPU_REPACK`` (interleaved layouts for
AVX2 kernels). On a Xeon with AMX (``AMX_INT8 = 1`` in ``llama_print_system_info``) the build
that llama-cpp-python 0.3.36 compiles crashes the process (SIGSEGV in
``ggml_backend_amx_mul_mat``) on the first decode of the shipped Q4_1 model, with or without an
adapter, serial or batched (measured here on 2 December; the F16 copy, the default weights then, is
not an AMX type and ran). Q8_0 and Q4_0 copies of the model crashed the same way (a scratch
decode with the extra buffer types on, later that day). On such a CPU every model this package
loads is loaded with ``use_extra_bufts`` off: the plain CPU kernels, slower for the quantized
types, never a crash.
Elsewhere nothing changes (``CPU_REPACK`` keeps speeding up Q4_0).

:func:`loading` covers llama-cpp-python's ``Llama(...)``, which builds its model parameters
inside its constructor: while it is open, ``llama_model_default_params`` (which the constructor
calls) returns parameters with the extra buffer types off. :func:`model_params` is for code that
loads through the low-level API itself.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["extra_buffers_unsafe", "loading", "model_params"]

_lock = threading.Lock()


@functools.cache
def extra_buffers_unsafe() -> bool:
    """Whether llama.cpp here would put weights in its AMX buffer type (see the module
    docstring)."""
    import llama_cpp

    info: bytes = llama_cpp.llama_print_system_info()
    return b"AMX_INT8 = 1" in info


def model_params() -> Any:
    """``llama_model_default_params()``, with the extra buffer types off where they crash."""
    import llama_cpp.llama_cpp as lib

    params = lib.llama_model_default_params()
    if extra_buffers_unsafe():
        params.use_extra_bufts = False
    return params


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """Around a ``Llama(...)`` construction: the model loads with the extra buffer types off
    where they crash. One load at a time goes through this (the swap is process-wide while it
    lasts); elsewhere it does nothing."""
    if not extra_buffers_unsafe():
        yield
        return
    import llama_cpp.llama_cpp as lib

    with _lock:
        default = lib.llama_model_default_params

        def safe() -> Any:
            params = default()
            params.use_extra_bufts = False
            return params

        lib.llama_model_default_params = safe
        try:
            yield
        finally:
            lib.llama_model_default_params = default
