"""Small GGUF files written by hand, for the tests of the GGUF reader and the adapter merge."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

ALIGN = 32


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _value(value: object) -> bytes:
    if isinstance(value, str):
        return struct.pack("<I", 8) + _string(value)
    if isinstance(value, bool):
        return struct.pack("<I?", 7, value)
    if isinstance(value, int):
        return struct.pack("<II", 4, value)
    if isinstance(value, float):
        return struct.pack("<If", 6, value)
    if isinstance(value, list):  # an array of strings, as a tokenizer's
        out = struct.pack("<IIQ", 9, 8, len(value))
        return out + b"".join(_string(str(v)) for v in value)
    raise TypeError(value)


def write_gguf(
    path: Path,
    metadata: dict[str, object],
    tensors: dict[str, np.ndarray],
    *,
    version: int = 3,
) -> Path:
    """Write a GGUF file of ``metadata`` and ``tensors`` (float16 or float32 arrays, numpy
    shapes: slowest dimension first) to ``path``."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata))
    for key, value in metadata.items():
        head += _string(key) + _value(value)
    data = b""
    infos = b""
    for name, array in tensors.items():
        kind = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}[array.dtype]
        data += b"\0" * (-len(data) % ALIGN)
        ne = tuple(reversed(array.shape))
        infos += _string(name) + struct.pack("<I", len(ne))
        infos += b"".join(struct.pack("<Q", n) for n in ne)
        infos += struct.pack("<IQ", kind, len(data))
        data += array.tobytes()
    body = head + infos
    body += b"\0" * (-len(body) % ALIGN)
    path.write_bytes(body + data)
    return path
