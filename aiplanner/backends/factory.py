"""create_backend: a backend by name, for the CLI, the demo and users' configuration files.

The embedded and HTTP backends are imported only when asked for, so a game that plans over HTTP
does not need llama-cpp-python installed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from aiplanner.backends.base import Backend
from aiplanner.errors import ConfigError

if TYPE_CHECKING:
    from aiplanner.backends.batched import EngineSettings
    from aiplanner.backends.embedded import Engine
    from aiplanner.backends.weights import Weights

__all__ = ["BACKEND_NAMES", "create_backend"]

BACKEND_NAMES: tuple[str, ...] = ("embedded", "openai", "ollama", "scripted", "heuristic")


def create_backend(
    name: str,
    *,
    model: str | None = None,
    base_url: str | None = None,
    n_threads: int | None = None,
    engine: Engine = "auto",
    weights: Weights = "auto",
    engine_settings: EngineSettings | None = None,
) -> Backend | None:
    """Build the backend called ``name``; ``heuristic`` gives None (plan with rules alone).

    ``model`` is a GGUF path for ``embedded`` and a model name for ``openai``/``ollama``;
    ``engine`` picks the embedded backend's engine (``auto``, ``serial``, ``batched``) and
    ``weights`` the weights it loads (``auto``, ``as-is``, ``f16``, ``q8_0``, ``mixed``,
    ``q4_0``, ``iq4_nl``); ``engine_settings`` the batched engine's own knobs
    (``EngineSettings``; None: defaults).
    ``n_threads`` is the embedded engine's thread count; the other backends ignore it (a
    server's threads are its own).
    Raises ConfigError for an unknown name or for an embedded-only option (``engine``,
    ``weights``, ``engine_settings``) given to another backend, which would otherwise be
    dropped without a word; ModelNotFoundError for a missing model file.
    """
    if name != "embedded" and name in BACKEND_NAMES:
        given = [
            option
            for option, is_set in (
                ("engine", engine != "auto"),
                ("weights", weights != "auto"),
                ("engine_settings", engine_settings is not None),
            )
            if is_set
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to the embedded "
                f"backend only, not to {name!r}"
            )
    if name == "embedded":
        from aiplanner.backends.embedded import EmbeddedBackend

        return EmbeddedBackend(
            model,
            n_threads=n_threads,
            engine=engine,
            weights=weights,
            engine_settings=engine_settings,
        )
    if name == "openai":
        from aiplanner.backends.openai import OpenAIBackend

        # llama-cpp-python's own server only understands {"type": "json_object", "schema": ...}.
        style = os.environ.get("AIPLANNER_RESPONSE_FORMAT", "json_schema")
        if style not in ("json_schema", "json_object"):
            raise ConfigError(
                f"AIPLANNER_RESPONSE_FORMAT must be json_schema or json_object, not {style!r}"
            )
        return OpenAIBackend(
            base_url,
            model=model or "default",
            response_format_style="json_object" if style == "json_object" else "json_schema",
        )
    if name == "ollama":
        from aiplanner.backends.ollama import OllamaBackend

        return OllamaBackend(base_url, model=model or "smollm2:135m")
    if name == "scripted":
        from aiplanner.backends.scripted import ScriptedBackend

        return ScriptedBackend(latency_s=(0.05, 0.3), seed=0)
    if name == "heuristic":
        return None
    raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
