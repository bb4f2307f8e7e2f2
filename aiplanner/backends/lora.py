"""Applying a LoRA adapter to a llama.cpp context (both embedded engines use this).

llama-cpp-python's own ``Llama(lora_path=...)`` does not notice a file llama.cpp refuses (it tests
the returned pointer against None, and llama.cpp returns a NULL pointer object), so a broken
adapter would load silently as no adapter: a silent change of behaviour. This checks.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

from aiplanner.errors import BackendError

__all__ = ["apply_adapter", "free_adapter"]


def apply_adapter(model: Any, ctx: Any, path: Path, scale: float = 1.0) -> Any:
    """Load the LoRA at ``path`` for ``model`` and apply it to ``ctx`` at ``scale``; return the
    adapter (freed with the model, or earlier by :func:`free_adapter`).

    Raises :class:`BackendError` (not retryable) if llama.cpp cannot load or apply it.
    """
    import llama_cpp

    adapter = llama_cpp.llama_adapter_lora_init(model, str(path).encode())
    if not adapter:  # a NULL pointer object, not None
        raise BackendError(
            f"could not load the LoRA adapter {path} (not a LoRA for this model?)",
            retryable=False,
        )
    adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
    scales = (ctypes.c_float * 1)(scale)
    if llama_cpp.llama_set_adapters_lora(ctx, adapters, 1, scales):
        llama_cpp.llama_adapter_lora_free(adapter)
        raise BackendError(f"could not apply the LoRA adapter {path}", retryable=False)
    return adapter


def free_adapter(adapter: Any) -> None:
    """Free an adapter from :func:`apply_adapter` (after the contexts using it are freed)."""
    import llama_cpp

    llama_cpp.llama_adapter_lora_free(adapter)
