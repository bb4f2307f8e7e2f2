"""The GGUF reader: metadata, tensor offsets, and clear errors for files it cannot read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aiplanner.adapters import default_adapter
from aiplanner.backends.gguf_layout import GGML_F16, GGML_F32, read_layout
from backends.gguf_files import write_gguf


def test_metadata_and_tensors_are_found_where_they_were_written(tmp_path: Path) -> None:
    w = np.arange(12, dtype=np.float16).reshape(4, 3)
    b = np.linspace(-1, 1, 5, dtype=np.float32)
    path = write_gguf(
        tmp_path / "m.gguf",
        {
            "general.architecture": "llama",
            "tokenizer.ggml.tokens": ["a", "bb", "ccc"],  # an array: skipped
            "adapter.lora.alpha": 16.0,
            "general.alignment": 32,
        },
        {"w": w, "b": b},
    )
    layout = read_layout(path)
    assert layout.metadata == {
        "general.architecture": "llama",
        "adapter.lora.alpha": 16.0,
        "general.alignment": 32,
    }
    tw, tb = layout.tensors["w"], layout.tensors["b"]
    assert (tw.ne, tw.shape, tw.ggml_type, tw.nbytes()) == ((3, 4), (4, 3), GGML_F16, 24)
    assert (tb.ne, tb.ggml_type, tb.nbytes()) == ((5,), GGML_F32, 20)
    raw = path.read_bytes()
    assert np.array_equal(np.frombuffer(raw, np.float16, 12, tw.offset).reshape(4, 3), w)
    assert np.array_equal(np.frombuffer(raw, np.float32, 5, tb.offset), b)
    assert tw.offset % 32 == 0 and tb.offset % 32 == 0


def test_the_shipped_adapter_reads_as_llama_cpp_wrote_it() -> None:
    layout = read_layout(default_adapter())
    assert layout.metadata["adapter.type"] == "lora"
    assert layout.metadata["adapter.lora.alpha"] == 16.0
    a = layout.tensors["blk.22.attn_q.weight.lora_a"]
    b = layout.tensors["blk.22.attn_q.weight.lora_b"]
    assert a.shape == (8, 576) and b.shape == (576, 8)  # rank 8 on a 576 x 576 matrix
    assert len(layout.tensors) % 2 == 0


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"NOPE" + bytes(40), "not a GGUF file"),
        (b"GGUF" + (9).to_bytes(4, "little") + bytes(16), "version 9"),
        (
            b"GGUF"
            + (3).to_bytes(4, "little")
            + (0).to_bytes(8, "little")
            + (5).to_bytes(8, "little"),
            "ends inside",
        ),
    ],
    ids=["magic", "version", "truncated"],
)
def test_a_file_it_cannot_read_is_a_value_error(tmp_path: Path, content: bytes, error: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=error):
        read_layout(path)


def test_a_tensor_past_the_end_of_the_file_is_a_value_error(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", {}, {"w": np.zeros((64, 64), np.float16)})
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="runs past the end"):
        read_layout(path)
