"""Ending a running ``llama_decode`` when the embedded backend closes.

Closing waited for the decode in progress: up to ~1.2 s here for a pass's 512-row decode
(``benchmarks/shutdown.py``: ``aclose()`` at random moments of a 24-request pass took 0.79-1.23 s
that way, 17-28 ms now), and interpreter exit waits the same. llama.cpp asks a context's abort
callback after every node of the graph it computes (hundreds a decode), on thread 0 of its own
pool, and ends the decode (``llama_decode`` returns 2, the batch's cells removed) once it returns
true.

The callback cannot be Python: a ctypes callback takes the GIL on each call, which the game's
thread holds most of the time, so every node of every decode would wait on the game. It is C:
libc's ``strlen`` over a flag of one byte followed by a NUL, which returns 1 once the flag is set
and 0 before. ``ggml_abort_callback`` is ``bool (*)(void *)``; on the C calling conventions of
x86-64 (System V and Windows) and AArch64 a ``bool`` is returned in the low byte of the return
register, which holds exactly 1 or 0 here (``strlen`` of this buffer can return nothing else),
so the two agree. Elsewhere, or where libc's ``strlen`` cannot be found, no callback is installed
and closing waits for the running decode, as before. The flag is only ever set (at close), never
cleared: every decode after it ends at once too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
import sys
from typing import Any

__all__ = ["AbortFlag", "abort_callback"]

# Where a bool comes back in the low byte of the register that strlen's size_t fills.
_ABIS = frozenset({"x86_64", "amd64", "aarch64", "arm64"})


class AbortFlag:
    """A flag llama.cpp reads between the nodes of a decode without Python (see the module
    docstring). :meth:`set` may be called from any thread; :meth:`install` on the thread that
    owns the context, before its decodes."""

    def __init__(self) -> None:
        self._flag = ctypes.create_string_buffer(2)  # b"\0\0": strlen 0, not set

    @property
    def is_set(self) -> bool:
        return self._flag.raw[0] != 0

    def set(self) -> None:
        """Every decode of a context this flag is installed on ends at its next graph node."""
        self._flag[0] = b"\x01"  # one byte written: the reader sees 0 or 1, nothing between

    @property
    def data(self) -> int:
        """The address llama.cpp passes to the callback (the flag's)."""
        return ctypes.addressof(self._flag)

    def install(self, lib: Any, ctx: Any) -> bool:
        """Make ``ctx`` (a ``llama_context`` pointer; ``lib``: ``llama_cpp``) end its decodes once
        the flag is set. False where this platform has no such callback (nothing installed)."""
        callback = abort_callback(lib)
        if callback is None:
            return False
        lib.llama_set_abort_callback(ctx, callback, ctypes.c_void_p(self.data))
        return True


@functools.cache
def abort_callback(lib: Any) -> Any:
    """libc's ``strlen`` as a ``lib.ggml_abort_callback``, or None where it cannot serve as one.
    Made once, and kept alive by the cache (llama.cpp holds only its address)."""
    if platform.machine().lower() not in _ABIS:
        return None
    try:
        if sys.platform == "win32":
            libc: Any = ctypes.cdll.msvcrt
        else:
            name = ctypes.util.find_library("c")
            libc = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        address = ctypes.cast(libc.strlen, ctypes.c_void_p).value
    except (OSError, AttributeError):
        return None
    if not address:
        return None
    return lib.ggml_abort_callback(address)
