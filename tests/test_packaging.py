"""The wheel is the product: built from this tree, installed with its ``demo`` extra into a fresh
virtual environment outside the checkout, it runs the demo headless and ``bench --quick``.

Dependencies come through pip as configured on this machine (its index or cache); the checkout is
never on the new interpreter's path, so a file missing from the wheel fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
_SOURCES = ("aiplanner", "demo_game", "pyproject.toml", "README.md")


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy", PYGAME_HIDE_SUPPORT_PROMPT="1")
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the sources (the build leaves nothing in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in _SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheelhouse")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)], src)
    (built,) = out.glob("aiplanner-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel and its ``demo`` extra; returns its python."""
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", f"{wheel}[demo]"], home)
    return python


def test_the_wheel_holds_the_maps_and_an_spdx_license(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = zf.read(meta).decode()
    assert {"demo_game/assets/maps/crossroads.json", "demo_game/assets/maps/canyon.json"} <= names
    assert "aiplanner/py.typed" in names and "aiplanner/bench/registry.py" in names
    assert not any(n.startswith("tests/") for n in names)
    assert "License-Expression: MIT" in metadata
    assert "Provides-Extra: bench" in metadata


def test_the_installed_demo_runs_headless_outside_the_checkout(
    installed: Path, tmp_path: Path
) -> None:
    where = _run(
        [str(installed), "-c", "import demo_game, aiplanner; print(demo_game.__file__)"], tmp_path
    )
    assert not Path(where.stdout.strip()).is_relative_to(ROOT)
    demo = [str(installed), "-m", "demo_game", "--headless", "--frames=60", "--backend=scripted"]
    for name in ("crossroads", "canyon"):  # both shipped maps, read from the installed package
        assert "frames 60" in _run([*demo, f"--map={name}"], tmp_path).stdout


def test_the_installed_bench_runs_quick_with_the_scripted_backend(
    installed: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    _run(
        [
            str(installed),
            "-m",
            "aiplanner",
            "bench",
            "--quick",
            "--backend=scripted",
            f"--out={out}",
            "--quiet",
        ],
        tmp_path,
    )
    doc = orjson.loads((out / "results.json").read_bytes())
    assert doc["suites"]["strategies"]["metrics"]
    assert doc["suites"]["frame"]["metrics"]  # the demo extra brings pygame
    assert "skipped" in doc["suites"]["tokens"]  # no llama-cpp-python without the embedded extra
