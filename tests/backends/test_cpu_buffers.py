"""Models load without llama.cpp's extra CPU buffer types where those crash (AMX), else as is."""

from __future__ import annotations

import threading

import pytest

from aiplanner.backends import cpu_buffers

llama_cpp = pytest.importorskip("llama_cpp")


@pytest.mark.parametrize("unsafe", [True, False])
def test_loading_turns_the_extra_buffers_off_only_where_they_crash_and_puts_things_back(
    monkeypatch: pytest.MonkeyPatch, unsafe: bool
) -> None:
    import llama_cpp.llama_cpp as lib

    monkeypatch.setattr(cpu_buffers, "extra_buffers_unsafe", lambda: unsafe)
    default = lib.llama_model_default_params
    assert default().use_extra_bufts  # llama.cpp's default
    with cpu_buffers.loading():
        # What Llama(...) calls while it builds its model parameters.
        assert lib.llama_model_default_params().use_extra_bufts is not unsafe
    assert lib.llama_model_default_params is default
    assert cpu_buffers.model_params().use_extra_bufts is not unsafe
    with pytest.raises(RuntimeError), cpu_buffers.loading():  # put back after an error too
        raise RuntimeError("the load failed")
    assert lib.llama_model_default_params is default


def test_one_load_at_a_time_goes_through_the_swap(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp.llama_cpp as lib

    monkeypatch.setattr(cpu_buffers, "extra_buffers_unsafe", lambda: True)
    default = lib.llama_model_default_params
    inside = threading.Event()
    release = threading.Event()
    second_in = threading.Event()

    def first() -> None:
        with cpu_buffers.loading():
            inside.set()
            release.wait(10)

    def second() -> None:
        with cpu_buffers.loading():
            second_in.set()

    t1 = threading.Thread(target=first)
    t1.start()
    assert inside.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    assert not second_in.wait(0.2)  # waits for the first load to end
    release.set()
    t1.join(10)
    t2.join(10)
    assert second_in.is_set()
    assert lib.llama_model_default_params is default  # the first swap is not kept by the second
