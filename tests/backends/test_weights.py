"""The weights the embedded engines load: the file as given, or a converted copy in a cache."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from aiplanner.backends import weights
from aiplanner.backends.embedded import EmbeddedBackend
from aiplanner.backends.gguf_layout import read_layout
from aiplanner.backends.weights import (
    CACHE_ENV_VAR,
    cache_dir,
    check_weights,
    converted_path,
    merge_adapter,
    merged_path,
    prepare_model,
    prepare_weights,
    wanted,
)
from aiplanner.errors import ConfigError
from aiplanner.model_path import default_model_path


def test_auto_converts_the_default_model_only() -> None:
    assert wanted("auto", default_model=True) == "q8_0"
    assert wanted("auto", default_model=False) is None
    assert wanted("as-is", default_model=True) is None
    assert wanted("q8_0", default_model=False) == "q8_0"
    assert wanted("f16", default_model=False) == "f16"
    assert wanted("q4_0", default_model=True) == "q4_0"
    assert wanted("iq4_nl", default_model=False) == "iq4_nl"


def test_a_mixed_copy_needs_a_llama_cpp_python_that_chooses_tensor_types(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import llama_cpp

    monkeypatch.delattr(llama_cpp, "llama_model_tensor_override")  # as before 0.3.36, say
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF")
    with caplog.at_level(logging.WARNING, logger=weights.__name__):
        assert prepare_weights(source, "mixed", folder=tmp_path / "cache") == source
    assert "cannot choose a tensor's type" in caplog.text  # loaded as given, and said so
    assert not any((tmp_path / "cache").glob("*.gguf"))


def test_an_unknown_weights_setting_is_a_config_error() -> None:
    assert check_weights("f16") == "f16"
    with pytest.raises(ConfigError, match="unknown weights 'q2'"):
        check_weights("q2")
    with pytest.raises(ConfigError, match="unknown weights"):
        EmbeddedBackend(weights="fp8")  # type: ignore[arg-type]


def test_the_cache_folder_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "aiplanner"


def test_a_changed_source_gets_a_new_copy_name(tmp_path: Path) -> None:
    source = tmp_path / "m.gguf"
    source.write_bytes(b"GGUF" + bytes(60))
    first = converted_path(source, "f16", tmp_path / "cache")
    assert first == converted_path(source, "f16", tmp_path / "cache")  # stable
    assert first != converted_path(source, "q8_0", tmp_path / "cache")
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert converted_path(source, "f16", tmp_path / "cache") != first
    assert first.parent == tmp_path / "cache" and first.name.endswith(".f16.gguf")


def test_no_conversion_asked_loads_the_file_as_given(tmp_path: Path) -> None:
    source = tmp_path / "m.gguf"
    source.write_bytes(b"GGUF")
    assert prepare_weights(source, None, folder=tmp_path / "cache") == source
    assert not (tmp_path / "cache").exists()


def test_a_copy_that_cannot_be_made_falls_back_to_the_file_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "m.gguf"
    source.write_bytes(b"GGUF")
    blocked = tmp_path / "a-file-not-a-folder"
    blocked.write_text("")
    with caplog.at_level(logging.WARNING, logger=weights.__name__):
        assert prepare_weights(source, "f16", folder=blocked) == source
    assert "loading" in caplog.text and "as given" in caplog.text and str(source) in caplog.text


def _age(path: Path, seconds: int) -> None:
    """Set ``path``'s modification time ``seconds`` into the past."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 1_000_000_000))


def test_copies_beyond_the_most_recently_used_of_a_family_are_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []

    def convert(source: Path, target: Path, kind: str, *args: object) -> None:
        made.append(target.name)
        target.write_bytes(b"GGUF" + kind.encode())

    monkeypatch.setattr(weights, "_convert", convert)
    folder = tmp_path / "cache"
    source = tmp_path / "m.gguf"
    source.write_bytes(b"GGUF")
    others = [folder / "other.0123456789abcdef.f16.gguf", folder / ".m.partial.f16.gguf.1-2.part"]
    folder.mkdir()
    for other in others:
        other.write_bytes(b"GGUF")
        _age(other, 10_000)
    q8 = prepare_weights(source, "q8_0", folder=folder)  # the same source, another kind
    _age(q8, 10_000)
    copies = []
    for i in range(3):  # the source changes three times (a reinstall): three copies
        source.write_bytes(b"GGUF" + bytes(i + 1))
        copies.append(prepare_weights(source, "f16", folder=folder))
        _age(copies[-1], 100 * (3 - i))  # made in this order
    # Two kept (the newest), the first one gone; other families and partial files untouched.
    assert [c.is_file() for c in copies] == [False, True, True]
    assert q8.is_file() and all(other.is_file() for other in others)
    assert len(made) == 4


def test_a_used_copy_is_kept_and_the_least_recently_used_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, adapter, source, folder = _merging(tmp_path, monkeypatch)
    one, _ = prepare_model(source, "f16", adapter, 1.0, folder=folder)
    half, _ = prepare_model(source, "f16", adapter, 0.5, folder=folder)
    _age(one, 200)
    _age(half, 100)
    assert prepare_model(source, "f16", adapter, 1.0, folder=folder) == (one, None)  # used now
    quarter, _ = prepare_model(source, "f16", adapter, 0.25, folder=folder)
    assert one.is_file() and quarter.is_file() and not half.is_file()
    assert sorted(p.name for p in folder.iterdir()) == sorted([one.name, quarter.name])


@pytest.mark.model
def test_a_copy_is_made_once_and_then_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = default_model_path()
    made = prepare_weights(source, "q8_0", n_threads=1, folder=tmp_path)
    assert made == converted_path(source, "q8_0", tmp_path)
    assert made.read_bytes()[:4] == b"GGUF"
    assert made.stat().st_size > source.stat().st_size  # 8-bit weights from 4-bit ones
    assert [p.name for p in tmp_path.iterdir()] == [made.name]  # no partial file left

    def refuse(*args: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(weights, "_convert", refuse)
    assert prepare_weights(source, "q8_0", folder=tmp_path) == made


@pytest.mark.model
def test_each_kind_is_converted_to_its_own_type(tmp_path: Path) -> None:
    import llama_cpp

    source = default_model_path()  # Q4_1: 20 bytes per 32 weights
    made = {
        kind: prepare_weights(source, kind, n_threads=1, folder=tmp_path)
        for kind in ("q4_0", "q8_0", "mixed", "iq4_nl")
    }
    assert source not in made.values()  # all made, none fell back
    # Q4_0 and IQ4_NL drop the per-block minimum (18 bytes per 32 weights), Q8_0 takes 34.
    assert made["q4_0"].stat().st_size < source.stat().st_size < made["q8_0"].stat().st_size
    assert made["iq4_nl"].stat().st_size < source.stat().st_size
    expected = {
        "q4_0": llama_cpp.GGML_TYPE_Q4_0,
        "q8_0": llama_cpp.GGML_TYPE_Q8_0,
        "iq4_nl": llama_cpp.GGML_TYPE_IQ4_NL,
    }
    for kind, path in made.items():  # a layer's matrix holds the kind asked for
        if kind != "mixed":
            assert read_layout(path).tensors["blk.0.ffn_gate.weight"].ggml_type == expected[kind]
    # mixed: Q8_0 but the feed-forward gate and up matrices, which are IQ4_NL
    tensors = read_layout(made["mixed"]).tensors
    iq4 = {name for name, t in tensors.items() if t.ggml_type == llama_cpp.GGML_TYPE_IQ4_NL}
    q8 = {name for name, t in tensors.items() if t.ggml_type == llama_cpp.GGML_TYPE_Q8_0}
    layers = {name.split(".")[1] for name in tensors if name.startswith("blk.")}
    assert iq4 == {f"blk.{i}.ffn_{m}.weight" for i in layers for m in ("gate", "up")}
    assert {f"blk.{i}.{m}.weight" for i in layers for m in ("ffn_down", "attn_q", "attn_v")} <= q8
    sizes = {kind: path.stat().st_size for kind, path in made.items()}
    assert sizes["iq4_nl"] < sizes["mixed"] < sizes["q8_0"]


@pytest.mark.model
def test_two_threads_converting_at_once_both_load_a_whole_copy(tmp_path: Path) -> None:
    source = default_model_path()
    got: list[Path] = []

    def convert() -> None:
        got.append(prepare_weights(source, "q8_0", n_threads=1, folder=tmp_path))

    threads = [threading.Thread(target=convert) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    made = converted_path(source, "q8_0", tmp_path)
    assert got == [made, made]  # neither fell back to the shipped file
    assert [p.name for p in tmp_path.iterdir()] == [made.name]  # no partial file left
    alone = prepare_weights(source, "q8_0", n_threads=1, folder=tmp_path / "alone")
    assert made.read_bytes() == alone.read_bytes()  # whole, as one conversion writes it


@pytest.mark.model
def test_a_source_llama_cpp_refuses_falls_back_to_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "broken.gguf"
    source.write_bytes(b"GGUF" + bytes(64))  # a header and nothing else
    with caplog.at_level(logging.WARNING, logger=weights.__name__):
        assert prepare_weights(source, "f16", folder=tmp_path / "cache") == source
    assert "as given" in caplog.text
    assert "(llama.cpp: " in caplog.text and "bad GGUF version: 0" in caplog.text  # why
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file left


@pytest.mark.model
def test_the_default_model_loads_its_f16_copy_and_scores_as_the_shipped_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyio

    from backends.test_embedded import HANG_GUARD_S
    from backends.test_embedded_scoring import _phrases, _request

    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    # The serial engine: exact along any route, so only the weights differ (the adapter on
    # the context for both: merged, see below).
    widened = EmbeddedBackend(n_threads=1, engine="serial", weights="f16", merge_adapter=False)
    as_given = EmbeddedBackend(n_threads=1, engine="serial", weights="as-is")
    assert widened.weights_path is None  # nothing loaded yet
    try:
        widened.load_sync()
        as_given.load_sync()
        assert widened.weights_path == converted_path(default_model_path(), "f16", tmp_path)
        assert as_given.weights_path == default_model_path()

        async def score(backend: EmbeddedBackend) -> tuple[float, ...]:
            with anyio.fail_after(HANG_GUARD_S):
                return (await backend.score(_request(_phrases()))).logprobs

        wide, given = anyio.run(score, widened), anyio.run(score, as_given)
        # The same weights, rounded differently (the Q4_1 path rounds activations to 8 bits):
        # summed over a phrase's tokens the scores move by up to ~0.5 nats (measured: 0.09-0.46),
        # far less than these candidates differ (3.6-17.6 nats), so the order stays.
        assert max(abs(a - b) for a, b in zip(wide, given, strict=True)) < 1.0
        assert sorted(range(len(wide)), key=wide.__getitem__) == sorted(
            range(len(given)), key=given.__getitem__
        )
    finally:
        widened.close()
        as_given.close()


# --- a LoRA adapter merged into the F16 copy ---------------------------------------------------


def _lora_pair(tmp_path: Path, *, alpha: float = 4.0) -> tuple[Path, Path]:
    """A two-tensor F16 "model" and a rank-2 LoRA on its matrix ``blk.0.attn_q.weight``."""
    from backends.gguf_files import write_gguf

    rng = np.random.default_rng(7)
    model = write_gguf(
        tmp_path / "model.f16.gguf",
        {"general.architecture": "llama", "tokenizer.ggml.tokens": ["a", "b"]},
        {
            "token_embd.weight": rng.normal(size=(5, 3)).astype(np.float16),
            "blk.0.attn_q.weight": rng.normal(size=(4, 3)).astype(np.float16),
        },
    )
    adapter = write_gguf(
        tmp_path / "lora.gguf",
        {"general.architecture": "llama", "adapter.type": "lora", "adapter.lora.alpha": alpha},
        {
            "blk.0.attn_q.weight.lora_a": rng.normal(size=(2, 3)).astype(np.float32),
            "blk.0.attn_q.weight.lora_b": rng.normal(size=(4, 2)).astype(np.float16),
        },
    )
    return model, adapter


def _merging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path, Path]:
    """A model's F16 copy (``model``), a LoRA for it, the "shipped" file the copy stands for
    (``prepare_weights`` answers with the copy) and the cache folder for merged copies."""
    model, adapter = _lora_pair(tmp_path)
    source = tmp_path / "shipped.gguf"
    source.write_bytes(b"GGUF")
    monkeypatch.setattr(weights, "prepare_weights", lambda src, kind, **kw: model if kind else src)
    return model, adapter, source, tmp_path / "cache"


def _tensor(path: Path, name: str) -> np.ndarray:
    info = read_layout(path).tensors[name]
    dtype = np.float16 if info.ggml_type == 1 else np.float32
    count = int(np.prod(info.shape))
    return np.frombuffer(path.read_bytes(), dtype, count, info.offset).reshape(info.shape)


@pytest.mark.parametrize(("alpha", "factor"), [(4.0, 0.5 * 4.0 / 2), (0.0, 0.5)])
def test_an_adapter_is_merged_as_llama_cpp_applies_it(
    tmp_path: Path, alpha: float, factor: float
) -> None:
    """W + scale * alpha / rank * B @ A (scale alone when the adapter has no alpha), rounded
    once to F16; every other byte as it was."""
    model, adapter = _lora_pair(tmp_path, alpha=alpha)
    target = tmp_path / "cache" / "merged.gguf"
    merge_adapter(model, adapter, 0.5, target)
    name = "blk.0.attn_q.weight"
    a = _tensor(adapter, name + ".lora_a").astype(np.float32)
    b = _tensor(adapter, name + ".lora_b").astype(np.float32)
    expected = _tensor(model, name).astype(np.float32) + factor * (b @ a)
    merged = _tensor(target, name)
    assert merged.dtype == np.float16
    np.testing.assert_allclose(merged.astype(np.float32), expected, rtol=1e-3, atol=1e-3)
    assert not np.allclose(merged, _tensor(model, name), atol=1e-3)  # it did change
    assert np.array_equal(_tensor(target, "token_embd.weight"), _tensor(model, "token_embd.weight"))
    assert read_layout(target).metadata == read_layout(model).metadata
    assert target.stat().st_size == model.stat().st_size
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no partial file left


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"adapter.type": "control_vector"}, "not a plain LoRA"),
        ({"general.architecture": "qwen2"}, "not an adapter for a llama model"),
        ({"tensor": "blk.9.attn_q.weight"}, "the model has no"),
        ({"shape": (2, 4)}, "does not fit its shape"),
    ],
    ids=["not-lora", "architecture", "no-such-matrix", "shape"],
)
def test_an_adapter_that_does_not_fit_is_refused(
    tmp_path: Path, change: dict[str, object], error: str
) -> None:
    from backends.gguf_files import write_gguf

    model, _ = _lora_pair(tmp_path)
    meta: dict[str, object] = {
        "general.architecture": "llama",
        "adapter.type": "lora",
        "adapter.lora.alpha": 4.0,
    }
    meta.update({k: v for k, v in change.items() if k not in ("tensor", "shape")})
    base = str(change.get("tensor", "blk.0.attn_q.weight"))
    shape = change.get("shape", (2, 3))
    adapter = write_gguf(
        tmp_path / "bad-lora.gguf",
        meta,
        {
            base + ".lora_a": np.ones(shape, np.float32),  # type: ignore[arg-type]
            base + ".lora_b": np.ones((4, 2), np.float32),
        },
    )
    target = tmp_path / "cache" / "merged.gguf"
    with pytest.raises(ValueError, match=error):
        merge_adapter(model, adapter, 1.0, target)
    assert not target.exists()


def test_the_merged_copy_is_made_once_and_a_merge_that_fails_applies_the_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model, adapter, source, folder = _merging(tmp_path, monkeypatch)
    path, left = prepare_model(source, "f16", adapter, 1.0, folder=folder)
    assert (path, left) == (merged_path(source, adapter, 1.0, folder), None)
    assert merged_path(source, adapter, 0.5, folder) != path  # another scale, another copy

    def refuse(*args: object) -> None:
        raise AssertionError("merged again")

    monkeypatch.setattr(weights, "merge_adapter", refuse)
    assert prepare_model(source, "f16", adapter, 1.0, folder=folder) == (path, None)
    # Not asked, not an F16 copy, or no adapter: the adapter goes on the context as it is.
    assert prepare_model(source, "f16", adapter, merge=False, folder=folder) == (model, adapter)
    assert prepare_model(source, None, adapter, folder=folder) == (source, adapter)
    assert prepare_model(source, "f16", None, folder=folder) == (model, None)
    broken = tmp_path / "broken-lora.gguf"
    broken.write_bytes(b"GGUF" + bytes(40))
    monkeypatch.undo()
    monkeypatch.setattr(weights, "prepare_weights", lambda src, kind, **kw: model if kind else src)
    with caplog.at_level(logging.WARNING, logger=weights.__name__):
        assert prepare_model(source, "f16", broken, folder=folder) == (model, broken)
    assert "could not merge" in caplog.text


def test_a_quantized_copy_is_made_from_the_merged_f16_weights_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, adapter, source, folder = _merging(tmp_path, monkeypatch)
    name = "blk.0.attn_q.weight"
    expected = tmp_path / "expected.gguf"
    merge_adapter(model, adapter, 1.0, expected)
    converted: list[tuple[str, str]] = []

    def convert(src: Path, target: Path, kind: str, n_threads: int, verbose: bool) -> None:
        # The quantizer's input is the merged F16 weights, whole.
        assert np.array_equal(_tensor(src, name), _tensor(expected, name))
        converted.append((src.name, kind))
        target.write_bytes(src.read_bytes())

    monkeypatch.setattr(weights, "_convert", convert)
    path, left = prepare_model(source, "q8_0", adapter, 1.0, folder=folder)
    assert (path, left) == (merged_path(source, adapter, 1.0, folder, "q8_0"), None)
    assert path != merged_path(source, adapter, 1.0, folder)  # not the F16 merge's name
    assert [p.name for p in folder.iterdir()] == [path.name]  # the F16 merge was temporary
    assert converted[0][0].startswith(".") and converted[0][1] == "q8_0"

    def refuse(*args: object) -> None:
        raise AssertionError("merged again")

    monkeypatch.setattr(weights, "merge_adapter", refuse)
    assert prepare_model(source, "q8_0", adapter, 1.0, folder=folder) == (path, None)
    assert len(converted) == 1  # made once
    # With the F16 merge cached (asked for once), another kind is quantized from it.
    monkeypatch.setattr(weights, "merge_adapter", merge_adapter)
    f16, _ = prepare_model(source, "f16", adapter, 1.0, folder=folder)
    monkeypatch.setattr(weights, "merge_adapter", refuse)
    q4, _ = prepare_model(source, "q4_0", adapter, 1.0, folder=folder)
    assert converted[-1] == (f16.name, "q4_0")
    assert sorted(p.name for p in folder.iterdir()) == sorted([path.name, f16.name, q4.name])


def test_a_merged_copy_made_before_is_loaded_without_its_plain_f16_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, adapter, source, folder = _merging(tmp_path, monkeypatch)
    monkeypatch.setattr(
        weights, "_convert", lambda src, target, *a: target.write_bytes(src.read_bytes())
    )
    path, _ = prepare_model(source, "q8_0", adapter, 1.0, folder=folder)
    asked: list[str | None] = []

    def plain(src: Path, kind: str | None, **kw: object) -> Path:
        asked.append(kind)  # the plain copy is made (258 MiB for F16) or touched here
        return model if kind else src

    monkeypatch.setattr(weights, "prepare_weights", plain)
    assert prepare_model(source, "q8_0", adapter, 1.0, folder=folder) == (path, None)
    assert asked == []


def test_a_quantized_merge_that_fails_applies_the_adapter_on_the_plain_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model, adapter, source, folder = _merging(tmp_path, monkeypatch)
    asked: list[str | None] = []

    def plain(src: Path, kind: str | None, **kw: object) -> Path:
        asked.append(kind)
        return model if kind else src

    def fail(src: Path, target: Path, kind: str, n_threads: int, verbose: bool) -> None:
        raise RuntimeError("llama_model_quantize returned 1")

    monkeypatch.setattr(weights, "prepare_weights", plain)
    monkeypatch.setattr(weights, "_convert", fail)
    with caplog.at_level(logging.WARNING, logger=weights.__name__):
        assert prepare_model(source, "q8_0", adapter, folder=folder) == (model, adapter)
    assert "could not merge" in caplog.text and "quantize returned 1" in caplog.text
    assert asked == ["f16", "q8_0"]  # merged into the F16 copy, then fell back to the Q8_0 one
    assert list(folder.iterdir()) == []  # no temporary merge left


@pytest.mark.model
def test_merged_weights_score_as_the_adapter_applied_on_the_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyio

    from backends.test_embedded import HANG_GUARD_S
    from backends.test_embedded_scoring import _phrases, _request

    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    merged = EmbeddedBackend(n_threads=1, engine="serial", weights="f16")
    applied = EmbeddedBackend(n_threads=1, engine="serial", weights="f16", merge_adapter=False)
    batched = EmbeddedBackend(n_threads=1, engine="batched", weights="f16")
    default = EmbeddedBackend(n_threads=1, engine="serial")  # a Q8_0 copy of the merge
    try:
        for backend in (merged, applied, batched, default):
            backend.load_sync()
        adapter = merged.adapter_path
        assert adapter is not None
        made = merged_path(default_model_path(), adapter, 1.0, tmp_path)
        assert (merged.weights_path, merged.adapter_merged) == (made, True)
        assert applied.weights_path == converted_path(default_model_path(), "f16", tmp_path)
        assert not applied.adapter_merged
        settings = batched.engine_settings
        assert batched.adapter_merged and settings is not None and settings.adapter is None

        async def score(backend: EmbeddedBackend) -> tuple[float, ...]:
            with anyio.fail_after(HANG_GUARD_S):
                return (await backend.score(_request(_phrases()))).logprobs

        quantized = merged_path(default_model_path(), adapter, 1.0, tmp_path, "q8_0")
        assert (default.weights_path, default.adapter_merged) == (quantized, True)

        one, other = anyio.run(score, merged), anyio.run(score, applied)
        # One F16 rounding of W + s * B @ A against the same sum taken at run time: measured
        # 0.003 nats at most, where the candidates differ by 3.6-17.6.
        assert max(abs(a - b) for a, b in zip(one, other, strict=True)) < 0.05
        # Q8_0 rounds the merged weights again (8 bits a weight): measured 0.35 nats at
        # most, the order of the candidates unchanged.
        eight = anyio.run(score, default)
        assert 0 < max(abs(a - b) for a, b in zip(eight, one, strict=True)) < 1.0
        assert sorted(range(len(one)), key=one.__getitem__) == sorted(
            range(len(eight)), key=eight.__getitem__
        )
    finally:
        for backend in (merged, applied, batched, default):
            backend.close()
