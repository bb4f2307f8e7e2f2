"""Fixtures of the backend tests: a real ``llama_cpp.server`` on 127.0.0.1 (session-scoped)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fakeservers import refused_url

from aiplanner.model_path import resolve_model_path

_START_TIMEOUT_S = 60.0
# ``python -m llama_cpp.server``, its model loaded without llama.cpp's AMX buffers where they
# crash (aiplanner.backends.cpu_buffers), as every model this package loads is.
_SERVER = (
    "import runpy, sys\n"
    "from aiplanner.backends import cpu_buffers\n"
    "sys.argv[0] = 'llama_cpp.server'\n"
    "with cpu_buffers.loading():\n"
    "    runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
)
_STOP_TIMEOUT_S = 10.0


def _tail(path: Path, limit: int = 3000) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    return text[-limit:]


@pytest.fixture(scope="session")
def llama_server() -> Iterator[str]:
    """Start ``python -m llama_cpp.server`` on the default GGUF; yield its base URL.

    Serialised requests (``interrupt_requests False``: a new request must not end a running
    stream) and two threads, the machine's two cores. Fails with the server's stderr tail if it
    does not answer ``/v1/models`` in time; terminates (then kills) it afterwards.
    """
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    model = resolve_model_path()
    url = refused_url()  # a free port: the server binds it next
    port = url.rsplit(":", 1)[1]
    options = {
        "--model": str(model),
        "--host": "127.0.0.1",
        "--port": port,
        "--n_ctx": "2048",
        "--n_threads": "2",
        "--n_threads_batch": "2",
        "--interrupt_requests": "False",
        "--verbose": "False",
    }
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", _SERVER, *itertools.chain(*options.items())],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_ready(proc, url, log_path)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=_STOP_TIMEOUT_S)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    give_up = time.monotonic() + _START_TIMEOUT_S
    with httpx.Client(timeout=1.0) as client:
        while True:
            code = proc.poll()
            if code is not None:
                pytest.fail(
                    f"llama_cpp.server exited with {code} before answering; output:\n"
                    f"{_tail(log_path)}"
                )
            try:
                if client.get(f"{url}/v1/models").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > give_up:
                pytest.fail(
                    f"llama_cpp.server did not answer {url}/v1/models within "
                    f"{_START_TIMEOUT_S:.0f}s; output:\n{_tail(log_path)}"
                )
            time.sleep(0.2)


@pytest.fixture(scope="session")
def per_thread_niceness() -> None:
    """Skip where one thread's niceness cannot be raised on its own (not Linux, or a sandbox
    that forbids ``setpriority``): there the engine's threads run at the caller's priority."""
    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread niceness is Linux's")
    import threading

    from aiplanner.backends.decode_threads import lower_priority

    got: list[int | None] = []
    probe = threading.Thread(target=lambda: got.append(lower_priority(1)))
    probe.start()
    probe.join(10)
    if not got or got[0] is None:
        pytest.skip("this environment forbids raising a thread's niceness")
