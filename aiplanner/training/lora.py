"""LoRA on the embedded model: packed candidate scoring, the listwise loss, the GGUF adapter.

Needs the ``train`` extra (torch, transformers, peft, gguf); imported only by the ``train``
command. transformers loads the shipped GGUF itself (de-quantising Q4_1 to float32), so the
adapter is trained on exactly the weights llama.cpp runs.

Packing. One training batch is one sequence laid out as a tree: the system prompt (the same for
every example) once, then each example's own prompt, each followed by its candidates' phrases
as branches; plus the content-free context with the batch's distinct phrases. A 4-D attention
mask lets every token see only its ancestors, and position ids restart at each branch, so each
phrase is scored exactly as if it were evaluated alone after its prompt (tested against separate
evaluation), at a fraction of the cost: the prompt is evaluated once, not once per candidate.

Loss. The guided decision picks the candidate with the best *calibrated* score: the phrase's
summed log-probability after the situation minus the same after the content-free context. The
loss is the cross-entropy of the teacher's best candidate under a softmax over exactly those
calibrated scores, so training moves the very quantity the game decides by, and every wrong
candidate is pushed down as the right one is pushed up. (A language-model loss on the best
phrase alone would not use the other candidates and could raise "shoot" everywhere, which
calibration then cancels.)
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from aiplanner.backends.base import Message
from aiplanner.errors import ConfigError
from aiplanner.phrasing import LEAD, content_free_messages
from aiplanner.training.dataset import ScoringExample, prompt_pieces
from aiplanner.training.teacher import file_sha256

__all__ = [
    "TARGET_MODULES",
    "CandidateScorer",
    "add_lora",
    "load_base",
    "lora_state",
    "write_lora_gguf",
]

TARGET_MODULES: Final = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
_GGUF_NAMES: Final = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}


def load_base(gguf_path: Path, cache: Path | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file, float32, SDPA attention, in eval mode.

    Reading a GGUF through transformers parses its metadata in Python (a minute or two on a busy
    two-core machine), so the de-quantised weights, config and tokenizer are kept in ``cache``
    (default ``$AIPLANNER_CACHE`` or ``~/.cache/aiplanner``), in a folder named after the GGUF's
    sha256, and read from there next time (seconds).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = cache if cache is not None else _cache_root()
    folder = root / f"base-{file_sha256(gguf_path)[:16]}"
    if not (folder / "model.safetensors").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        _save_base(model, tokenizer, folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=torch.float32, attn_implementation="sdpa"
    )
    model.eval()
    return model, tokenizer


def _cache_root() -> Path:
    env = os.environ.get("AIPLANNER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "aiplanner"


def _save_base(model: Any, tokenizer: Any, folder: Path) -> None:
    """Weights (safetensors; the tied output matrix once), config and tokenizer, written to a
    temporary folder renamed into place, so a reader never sees half a cache."""
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(tmp / "model.safetensors"))
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = ["LlamaForCausalLM"]
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(str(tmp))
    try:
        tmp.rename(folder)
    except OSError:  # another process finished first: theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)


def add_lora(model: Any, rank: int, alpha: int, seed: int, layers: int) -> Any:
    """Wrap ``model`` with a fresh LoRA (seeded) on :data:`TARGET_MODULES` of its top ``layers``
    decoder layers; return the wrapper.

    Only the top layers: nothing below the first adapted layer needs gradients, so autograd keeps
    no activations there and the backward pass stops early (on two cores, the forward pass of the
    whole model is most of a step then).
    """
    from peft import LoraConfig, get_peft_model

    total = int(model.config.num_hidden_layers)
    if not 1 <= layers <= total:
        raise ConfigError(f"layers must be 1..{total}, got {layers}")
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=list(TARGET_MODULES),
        layers_to_transform=list(range(total - layers, total)),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft still calls transformers' deprecated is_gradient_checkpointing (not ours to fix)
        warnings.filterwarnings(
            "ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning
        )
        return get_peft_model(model, config)


@dataclass(frozen=True, slots=True)
class _Packed:
    input_ids: torch.Tensor  # (1, L)
    position_ids: torch.Tensor  # (1, L)
    mask: torch.Tensor  # (1, 1, L, L) bool, True = may attend
    rows: torch.Tensor  # (T,) positions whose next-token distribution is read
    targets: torch.Tensor  # (T,) the token expected there
    owner: torch.Tensor  # (T,) which branch the row belongs to
    n_branches: int


class CandidateScorer:
    """Summed log-probabilities of phrases after prompts, many at once, with gradients."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self._cache: dict[tuple[str, bool], list[int]] = {}

    def encode(self, text: str, special: bool) -> list[int]:
        key = (text, special)
        found = self._cache.get(key)
        if found is None:
            if special:
                found = list(self.tokenizer.encode(text, add_special_tokens=False))
            else:
                found = list(
                    self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)[
                        "input_ids"
                    ]
                )
            if len(self._cache) < 100_000:
                self._cache[key] = found
        return found

    def prompt_tokens(self, messages: Sequence[Message]) -> list[int]:
        out: list[int] = []
        for text, special in prompt_pieces(messages, LEAD):
            out += self.encode(text, special)
        return out

    def examples_scores(
        self, examples: Sequence[ScoringExample]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per example: raw scores and content-free scores of its phrases (tensors, in order)."""
        contexts = [self.prompt_tokens(e.messages) for e in examples]
        contexts.append(self.prompt_tokens(content_free_messages()))
        distinct = list(dict.fromkeys(p for e in examples for p in e.phrases))
        branches = [[self.encode(p, False) for p in e.phrases] for e in examples]
        branches.append([self.encode(p, False) for p in distinct])
        scores = self.score_tree(contexts, branches)
        free = dict(zip(distinct, scores[-1], strict=True))
        raw = [scores[i] for i in range(len(examples))]
        base = [torch.stack([free[p] for p in e.phrases]) for e in examples]
        return raw, base

    def score_tree(
        self, contexts: Sequence[Sequence[int]], branches: Sequence[Sequence[Sequence[int]]]
    ) -> list[torch.Tensor]:
        """For each context, the summed log-probability of each of its branches (one tensor of
        shape (n_branches,) per context), from one forward pass.

        Raises :class:`ConfigError` for an empty context or branch.
        """
        packed = _pack(contexts, branches)
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        hidden = inner.model(
            input_ids=packed.input_ids,
            position_ids=packed.position_ids,
            attention_mask=packed.mask,
            use_cache=False,
        ).last_hidden_state[0]
        logits = inner.lm_head(hidden.index_select(0, packed.rows))
        logp = torch.log_softmax(logits.float(), dim=-1)
        picked = logp.gather(1, packed.targets.unsqueeze(1)).squeeze(1)
        sums = torch.zeros(packed.n_branches, dtype=picked.dtype).index_add(0, packed.owner, picked)
        out = []
        start = 0
        for group in branches:
            out.append(sums[start : start + len(group)])
            start += len(group)
        return out


def _pack(
    contexts: Sequence[Sequence[int]], branches: Sequence[Sequence[Sequence[int]]]
) -> _Packed:
    if len(contexts) != len(branches) or not contexts:
        raise ConfigError("one branch list per context, at least one context")
    if any(not c for c in contexts) or any(not b for group in branches for b in group):
        raise ConfigError("contexts and branches must not be empty")
    # The shared root: the longest common prefix, leaving every context at least one own token.
    root = 0
    shortest = min(len(c) for c in contexts)
    while root < shortest - 1 and all(c[root] == contexts[0][root] for c in contexts):
        root += 1
    ids: list[int] = list(contexts[0][:root])
    pos: list[int] = list(range(root))
    seg: list[int] = [0] * root
    parent: list[int] = [-1]  # segment -> parent segment
    rows: list[int] = []
    targets: list[int] = []
    owner: list[int] = []
    n_branch = 0
    for ctx, group in zip(contexts, branches, strict=True):
        ctx_seg = len(parent)
        parent.append(0)
        rest = ctx[root:]
        ids += rest
        pos += range(root, len(ctx))
        seg += [ctx_seg] * len(rest)
        last = len(ids) - 1  # the context's last token predicts each branch's first
        for branch in group:
            b_seg = len(parent)
            parent.append(ctx_seg)
            prev = last
            for k, tok in enumerate(branch):
                rows.append(prev)
                targets.append(tok)
                owner.append(n_branch)
                ids.append(tok)
                pos.append(len(ctx) + k)
                seg.append(b_seg)
                prev = len(ids) - 1
            n_branch += 1
    n_seg = len(parent)
    visible = np.zeros((n_seg, n_seg), dtype=bool)
    for s in range(n_seg):
        a = s
        while a >= 0:
            visible[s, a] = True
            a = parent[a]
    seg_arr = np.asarray(seg)
    length = len(ids)
    mask = visible[seg_arr[:, None], seg_arr[None, :]] & np.tri(length, dtype=bool)
    return _Packed(
        input_ids=torch.tensor([ids], dtype=torch.long),
        position_ids=torch.tensor([pos], dtype=torch.long),
        mask=torch.from_numpy(mask)[None, None],
        rows=torch.tensor(rows, dtype=torch.long),
        targets=torch.tensor(targets, dtype=torch.long),
        owner=torch.tensor(owner, dtype=torch.long),
        n_branches=n_branch,
    )


def lora_state(model: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{hf_module_path: (A, B)}`` of a peft-wrapped model, as float32 arrays."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            a = module.lora_A["default"].weight.detach().float().cpu().numpy()
            b = module.lora_B["default"].weight.detach().float().cpu().numpy()
            out[name] = (a, b)
    return out


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rotary row order for Q/K (as convert_hf_to_gguf.py's LlamaModel.permute)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_lora_gguf(
    path: Path,
    state: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    alpha: float,
    n_head: int,
    n_head_kv: int,
) -> None:
    """Write a llama.cpp LoRA adapter (float16) for a Llama-architecture base model.

    Tensor names and layout follow llama.cpp's ``convert_lora_to_gguf.py``: ``blk.N.attn_q.
    weight.lora_a`` (rank x in) and ``.lora_b`` (out x rank), Q and K rows permuted like the base
    model's. Raises :class:`ConfigError` for a module it cannot place.
    """
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name in sorted(state, key=_module_order):
        a, b = state[name]
        parts = name.split(".")
        try:
            layer = int(parts[parts.index("layers") + 1])
            target = _GGUF_NAMES[parts[-1]]
        except (ValueError, IndexError, KeyError) as exc:
            raise ConfigError(f"cannot place LoRA module {name!r} in a GGUF adapter") from exc
        if parts[-1] == "q_proj":
            b = _permute(b, n_head)
        elif parts[-1] == "k_proj":
            b = _permute(b, n_head_kv)
        base = f"blk.{layer}.{target}.weight"
        writer.add_tensor(base + ".lora_a", np.ascontiguousarray(a, dtype=np.float16))
        writer.add_tensor(base + ".lora_b", np.ascontiguousarray(b, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _module_order(name: str) -> tuple[int, int]:
    parts = name.split(".")
    try:
        layer = int(parts[parts.index("layers") + 1])
    except (ValueError, IndexError):
        layer = -1
    order = TARGET_MODULES.index(parts[-1]) if parts[-1] in TARGET_MODULES else 99
    return layer, order


def mean_ce(
    raw: Sequence[torch.Tensor], base: Sequence[torch.Tensor], best: Sequence[int]
) -> torch.Tensor:
    """Mean cross-entropy of ``best`` under a softmax over calibrated scores (raw - base)."""
    losses = [-torch.log_softmax(r - b, dim=0)[k] for r, b, k in zip(raw, base, best, strict=True)]
    return torch.stack(losses).mean()


def picks(raw: Sequence[torch.Tensor], base: Sequence[torch.Tensor] | None) -> list[int]:
    """The decision's pick per example: arg-max of calibrated (or raw) scores, ties to the first."""
    out = []
    for i, r in enumerate(raw):
        s = (r - base[i]) if base is not None else r
        values = s.tolist()
        out.append(max(range(len(values)), key=lambda j: (values[j], -j)))
    return out
