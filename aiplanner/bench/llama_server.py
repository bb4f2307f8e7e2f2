"""A llama.cpp ``llama-server`` for the benchmarks: built on first use, started, stopped.

``llama-server`` is a real continuous-batching OpenAI-compatible server (``--parallel N`` slots),
the fair comparison for the ``concurrent`` strategy. It is built from the llama.cpp sources that
the llama-cpp-python sdist vendors (the version installed here), with cmake and a C++ compiler,
into the user's cache folder (``$XDG_CACHE_HOME/aiplanner`` or ``~/.cache/aiplanner``); about five
minutes on two cores, once. Only the benchmarks use it, never the test suite.

    with LlamaServer(slots=10) as server:      # builds on first use
        backend = OpenAIBackend(server.base_url, max_concurrency=10)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType

import httpx

from aiplanner.bench.errors import BenchError
from aiplanner.model_path import resolve_model_path

__all__ = ["BUILD_FLAGS", "LlamaServer", "build_llama_server", "cache_dir", "cached_binary"]

_START_TIMEOUT_S = 120.0
# The cmake configuration: the server only, tuned for this CPU, nothing fetched from the network
# (no curl, no TLS, no prebuilt web UI), one self-contained binary to keep in the cache.
BUILD_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)


def cache_dir() -> Path:
    """Where built binaries are kept: ``$XDG_CACHE_HOME/aiplanner`` or ``~/.cache/aiplanner``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aiplanner"


def _engine_version() -> str:
    try:
        return version("llama_cpp_python")
    except PackageNotFoundError as exc:
        raise BenchError(
            "llama-server is built from the llama-cpp-python sources of the installed version: "
            "pip install 'aiplanner[embedded]' first"
        ) from exc


def cached_binary() -> Path:
    """The path the binary for the installed llama-cpp-python version has (built or not)."""
    return cache_dir() / f"llama-server-{_engine_version()}"


def _run(cmd: list[str], cwd: Path, log: Path) -> None:
    with log.open("ab") as out:
        done = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-1500:]
        raise BenchError(f"{' '.join(cmd[:3])}... failed ({done.returncode}); log {log}:\n{tail}")


def build_llama_server(jobs: int = 2) -> Path:
    """Build ``llama-server`` into the cache folder unless it is there; returns its path.

    Raises BenchError without cmake or a C++ compiler (saying what to install), or when the
    download or the build fails (with the end of the build log).
    """
    target = cached_binary()
    if target.is_file():
        return target
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        raise BenchError(
            f"building llama-server needs {' and '.join(missing)} (on Debian/Ubuntu: "
            "apt-get install cmake g++); or start a server yourself and pass --base-url"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    engine = _engine_version()
    log = target.parent / f"llama-server-{engine}.build.log"
    with tempfile.TemporaryDirectory(prefix="aiplanner-llama-") as tmp:
        work = Path(tmp)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                "-d",
                str(work),
                f"llama-cpp-python=={engine}",
            ],
            work,
            log,
        )
        sdists = list(work.glob("llama_cpp_python-*.tar.gz"))
        if not sdists:
            raise BenchError(f"pip download gave no llama-cpp-python sdist in {work}")
        with tarfile.open(sdists[0]) as tar:
            tar.extractall(work, filter="data")
        sources = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"), None)
        if sources is None:
            raise BenchError("the llama-cpp-python sdist holds no vendor/llama.cpp")
        nice = ["nice", "-n", "19"] if shutil.which("nice") else []  # the game keeps its cores
        _run([*nice, "cmake", "-B", "build", *BUILD_FLAGS], sources, log)
        _run(
            [*nice, "cmake", "--build", "build", "-j", str(jobs), "--target", "llama-server"],
            sources,
            log,
        )
        built = sources / "build" / "bin" / "llama-server"
        partial = target.with_suffix(".partial")
        shutil.copy2(built, partial)
        partial.replace(target)  # atomic: a half-copied binary is never taken for a built one
    return target


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """``llama-server`` on 127.0.0.1, a free port, ``slots`` parallel slots; a context manager.
    ``threads`` for prompts and generation alike; ``lora``: an adapter applied beside the model;
    ``flash_attn`` off by default, as in the serial engine (the engine benchmark passes the
    batched engine's setting, on).

    ``start`` builds the binary on first use and waits until ``/health`` answers; raises
    BenchError (with the end of the server's log) when it does not start.
    """

    def __init__(
        self,
        *,
        slots: int = 10,
        model: str | None = None,
        threads: int = 2,
        ctx_per_slot: int = 1024,
        lora: Path | None = None,
        flash_attn: bool = False,
    ) -> None:
        if slots < 1:
            raise BenchError(f"slots must be at least 1, got {slots}")
        self.slots = slots
        self._model = model
        self._threads = threads
        self._lora = lora
        self._flash_attn = flash_attn
        self._ctx = ctx_per_slot * slots
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._healthy = False
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LlamaServer:
        binary = build_llama_server()
        model = resolve_model_path(self._model)
        self.port = _free_port()
        fd, log = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
        self._log = Path(log)
        cmd = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--parallel", str(self.slots), "-c", str(self._ctx), "-t", str(self._threads)]
        cmd += ["-tb", str(self._threads), "-fa", "on" if self._flash_attn else "off"]
        if self._lora is not None:
            cmd += ["--lora", str(self._lora)]
        with os.fdopen(fd, "wb") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    self._healthy = True
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        tail = self._log.read_text(errors="replace")[-1500:]
        self.stop()
        raise BenchError(f"llama-server did not become healthy; log {self._log}:\n{tail}")

    def stop(self) -> None:
        """Stop the server (terminate, then kill after 10 s). Idempotent. The log of a server
        that never became healthy is kept (its path is in the error); others are removed."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None
        if self._healthy and self._log is not None:
            self._log.unlink(missing_ok=True)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
