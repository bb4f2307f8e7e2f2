"""The llama-server fixture's plumbing, with a stand-in binary (the real one is never built here):
where it is cached, the clear message without a compiler, start on 127.0.0.1 with the slots
asked for, stop, and a server that dies at start."""

from __future__ import annotations

import shutil
import stat
import sys
from pathlib import Path

import httpx
import pytest

from aiplanner.bench.errors import BenchError
from aiplanner.bench.llama_server import (
    BUILD_FLAGS,
    LlamaServer,
    build_llama_server,
    cache_dir,
    cached_binary,
)

pytest.importorskip("llama_cpp")  # the binary is named after the installed llama-cpp-python

_FAKE = """#!{python}
import http.server, sys
args = sys.argv[1:]
open({record!r}, "w").write(" ".join(args))
if "--die" in open({record!r} + ".mode").read():
    print("error: cannot load model", flush=True)
    raise SystemExit(1)
port = int(args[args.index("--port") + 1])
host = args[args.index("--host") + 1]

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass

http.server.HTTPServer((host, port), Health).serve_forever()
"""


@pytest.fixture
def fake_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A stand-in llama-server in a temporary cache folder, and a fake GGUF model file."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    binary = cached_binary()
    binary.parent.mkdir(parents=True)
    record = tmp_path / "argv.txt"
    binary.write_text(_FAKE.format(python=sys.executable, record=str(record)))
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    Path(f"{record}.mode").write_text("serve")
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + bytes(64))
    return record, model


def test_binary_lives_in_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "aiplanner"
    assert cached_binary().parent == tmp_path / "aiplanner"
    assert cached_binary().name.startswith("llama-server-")


def test_without_a_compiler_the_message_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(BenchError) as info:
        build_llama_server()
    message = str(info.value)
    assert "cmake and c++" in message and "apt-get install cmake g++" in message
    assert "--base-url" in message
    assert not any(tmp_path.rglob("llama-server*"))  # nothing half-built left behind


def test_starts_on_loopback_with_the_slots_asked_for_and_stops(
    fake_server: tuple[Path, Path],
) -> None:
    record, model = fake_server
    with LlamaServer(slots=3, model=str(model), threads=1) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{server.base_url}/health", timeout=5.0).status_code == 200
        args = record.read_text().split()
        assert args[args.index("--parallel") + 1] == "3"
        assert args[args.index("--host") + 1] == "127.0.0.1"
        assert args[args.index("-m") + 1] == str(model)
        url = server.base_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2.0)
    server.stop()  # idempotent


def test_a_server_that_dies_at_start_is_reported_with_its_log(
    fake_server: tuple[Path, Path],
) -> None:
    record, model = fake_server
    Path(f"{record}.mode").write_text("--die")
    with pytest.raises(BenchError, match="cannot load model"):
        LlamaServer(slots=2, model=str(model)).start()
    with pytest.raises(BenchError, match="slots"):
        LlamaServer(slots=0)


def test_threads_adapter_and_flash_attention_reach_the_command_line(
    fake_server: tuple[Path, Path], tmp_path: Path
) -> None:
    record, model = fake_server
    lora = tmp_path / "adapter.gguf"
    with LlamaServer(slots=2, model=str(model), threads=1, lora=lora):
        args = record.read_text().split()
    assert args[args.index("-t") + 1] == args[args.index("-tb") + 1] == "1"
    assert args[args.index("--lora") + 1] == str(lora)
    assert args[args.index("-fa") + 1] == "off"  # like the embedded engines: scores agree
    with LlamaServer(slots=2, model=str(model), flash_attn=True):
        args = record.read_text().split()
    assert "--lora" not in args and args[args.index("-fa") + 1] == "on"


def test_the_build_fetches_nothing_and_builds_the_server_for_this_cpu() -> None:
    flags = set(BUILD_FLAGS)
    assert {"-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF"} <= flags
    assert {"-DLLAMA_BUILD_SERVER=ON", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF"} <= flags
