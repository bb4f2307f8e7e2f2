"""Where a GGUF file keeps its tensors: enough of the format to read and patch weights in place.

A GGUF file (version 2 or 3) is a header (magic ``GGUF``, version, tensor and key-value counts),
the key-value metadata, one info record per tensor (name, dimensions, ggml type, offset into the
data section) and the data section, aligned to ``general.alignment`` (32 by default). This
reads the header, keeps the scalar metadata values (arrays, such as the tokenizer's 49,152
tokens, are skipped), and turns each tensor's record into an absolute byte offset, so a tensor of
a known type can be mapped as a numpy array. Nothing here writes a file or trusts a size it has
not checked against the file's length.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["GGML_F16", "GGML_F32", "GGUFLayout", "TensorInfo", "read_layout"]

GGML_F32: Final = 0
GGML_F16: Final = 1
_ITEM_BYTES: Final = {GGML_F32: 4, GGML_F16: 2}  # the only types read as arrays here

_SCALARS: Final = {  # GGUF value type -> struct format
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING: Final = 8
_ARRAY: Final = 9
_MAX_DIMS: Final = 4


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor: ``ne`` its dimensions as ggml counts them (fastest first: a matrix of
    ``n_out`` rows of ``n_in`` is ``(n_in, n_out)``), ``ggml_type``, ``offset`` in bytes from
    the start of the file."""

    ne: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy's shape for the tensor (slowest dimension first)."""
        return tuple(reversed(self.ne))

    @property
    def n_elements(self) -> int:
        """How many values it holds."""
        return math.prod(self.ne)

    def nbytes(self) -> int | None:
        """Its size in bytes if its type is F32 or F16 (None for other types)."""
        size = _ITEM_BYTES.get(self.ggml_type)
        return None if size is None else size * self.n_elements


@dataclass(frozen=True, slots=True)
class GGUFLayout:
    """The scalar metadata (strings included) and the tensors of one GGUF file."""

    metadata: dict[str, str | int | float | bool]
    tensors: dict[str, TensorInfo]


class _Reader:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str) -> int | float | bool:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise ValueError("the file ends inside its header")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value  # type: ignore[no-any-return]

    def string(self) -> str:
        n = int(self.take("<Q"))
        if self.pos + n > len(self.buf):
            raise ValueError("the file ends inside a string of its header")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int) -> str | int | float | bool | None:
        """One value of GGUF type ``kind``; None for an array (skipped)."""
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            inner = int(self.take("<I"))
            count = int(self.take("<Q"))
            if inner in _SCALARS:
                size = struct.calcsize(_SCALARS[inner]) * count
                if self.pos + size > len(self.buf):
                    raise ValueError("the file ends inside an array of its header")
                self.pos += size
            else:
                for _ in range(count):
                    self.value(inner)
            return None
        fmt = _SCALARS.get(kind)
        if fmt is None:
            raise ValueError(f"unknown GGUF value type {kind}")
        return self.take(fmt)


def read_layout(path: Path) -> GGUFLayout:
    """The layout of the GGUF file at ``path``.

    Raises :class:`ValueError` for a file that is not GGUF version 2 or 3, or whose header or
    tensors do not fit in it, and :class:`OSError` when it cannot be read.
    """
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        r = _Reader(buf)
        if len(buf) < 24 or bytes(buf[:4]) != b"GGUF":
            raise ValueError(f"{path.name} is not a GGUF file")
        r.pos = 4
        version = int(r.take("<I"))
        if version not in (2, 3):
            raise ValueError(f"{path.name}: GGUF version {version} is not read here")
        n_tensors = int(r.take("<Q"))
        n_kv = int(r.take("<Q"))
        metadata: dict[str, str | int | float | bool] = {}
        for _ in range(n_kv):
            key = r.string()
            value = r.value(int(r.take("<I")))
            if value is not None:
                metadata[key] = value
        records: list[tuple[str, tuple[int, ...], int, int]] = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = int(r.take("<I"))
            if not 1 <= n_dims <= _MAX_DIMS:
                raise ValueError(f"{path.name}: tensor {name!r} has {n_dims} dimensions")
            ne = tuple(int(r.take("<Q")) for _ in range(n_dims))
            records.append((name, ne, int(r.take("<I")), int(r.take("<Q"))))
        align = metadata.get("general.alignment", 32)
        if not isinstance(align, int) or isinstance(align, bool) or align <= 0:
            raise ValueError(f"{path.name}: bad general.alignment {align!r}")
        data = -(-r.pos // align) * align
        tensors: dict[str, TensorInfo] = {}
        for name, ne, ggml_type, offset in records:
            info = TensorInfo(ne, ggml_type, data + offset)
            size = info.nbytes()
            if size is not None and info.offset + size > len(buf):
                raise ValueError(f"{path.name}: tensor {name!r} runs past the end of the file")
            tensors[name] = info
        return GGUFLayout(metadata, tensors)
