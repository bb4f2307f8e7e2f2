"""Packed candidate scoring equals separate evaluation; the GGUF adapter has llama.cpp's layout.

On a tiny random Llama (no model file needed, a second or two)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_MISSING = [
    m for m in ("torch", "transformers", "peft", "gguf") if importlib.util.find_spec(m) is None
]
pytestmark = pytest.mark.skipif(
    bool(_MISSING), reason=f"the train extra is not installed (missing {', '.join(_MISSING)})"
)


def _tiny(seed: int = 0):  # type: ignore[no-untyped-def]
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config).eval()  # type: ignore[no-untyped-call]


def _separate(model, context: list[int], branch: list[int]) -> float:  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([context + branch])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return sum(float(logp[len(context) - 1 + k, t]) for k, t in enumerate(branch))


def test_packed_tree_scores_equal_separate_evaluation() -> None:
    import torch

    from aiplanner.training.lora import CandidateScorer

    model = _tiny()
    root = [5, 6, 7, 8]
    contexts = [[*root, 9, 10, 11], [*root, 12], [*root, 13, 14, 15, 16, 17]]
    branches = [[[1, 2], [3], [4, 5, 6]], [[7, 7]], [[8], [9, 10], [11, 12], [1]]]
    scorer = CandidateScorer(model, tokenizer=None)
    with torch.no_grad():
        packed = scorer.score_tree(contexts, branches)
    for ctx, group, got in zip(contexts, branches, packed, strict=True):
        want = [_separate(model, ctx, b) for b in group]
        assert got.tolist() == pytest.approx(want, abs=1e-4)


def test_gradients_reach_only_the_adapted_top_layers() -> None:
    from aiplanner.training.lora import CandidateScorer, add_lora, lora_state, mean_ce

    model = add_lora(_tiny(), rank=2, alpha=4, seed=0, layers=2)
    scorer = CandidateScorer(model, tokenizer=None)
    raw = scorer.score_tree([[1, 2, 3]], [[[4], [5, 6]]])
    loss = mean_ce(raw, [raw[0].detach() * 0], [1])
    loss.backward()  # type: ignore[no-untyped-call]
    names = sorted(lora_state(model))
    assert names and all(".layers.0." not in n for n in names)
    assert {n.split(".layers.")[1].split(".")[0] for n in names} == {"1", "2"}
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def test_adapter_gguf_layout(tmp_path: Path) -> None:
    import gguf
    import numpy as np
    import torch

    from aiplanner.training.lora import _permute, add_lora, lora_state, write_lora_gguf

    model = add_lora(_tiny(), rank=2, alpha=4, seed=0, layers=1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.uniform_(-1, 1)  # B starts at zero: make the permutation visible
    state = lora_state(model)
    path = tmp_path / "a.gguf"
    write_lora_gguf(path, state, alpha=4.0, n_head=4, n_head_kv=2)
    reader = gguf.GGUFReader(str(path))
    fields = {f.name: f for f in reader.fields.values()}
    assert bytes(fields["general.type"].parts[-1]).decode() == "adapter"
    assert bytes(fields["adapter.type"].parts[-1]).decode() == "lora"
    assert float(fields["adapter.lora.alpha"].parts[-1][0]) == 4.0
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "llama"
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 * 7
    a, b = state["base_model.model.model.layers.2.self_attn.q_proj"]
    got_b = np.asarray(tensors["blk.2.attn_q.weight.lora_b"].data, dtype=np.float32)
    assert got_b.shape == b.shape == (32, 2)
    np.testing.assert_allclose(got_b, _permute(b, 4), atol=1e-3)
    assert not np.allclose(got_b, b, atol=1e-3)
    got_kb = np.asarray(tensors["blk.2.attn_k.weight.lora_b"].data, dtype=np.float32)
    kb = state["base_model.model.model.layers.2.self_attn.k_proj"][1]
    np.testing.assert_allclose(got_kb, _permute(kb, 2), atol=1e-3)
    got_a = np.asarray(tensors["blk.2.ffn_down.weight.lora_a"].data, dtype=np.float32)
    da = state["base_model.model.model.layers.2.mlp.down_proj"][0]
    np.testing.assert_allclose(got_a, da, atol=1e-3)
    np.testing.assert_allclose(
        np.asarray(tensors["blk.2.attn_q.weight.lora_a"].data, dtype=np.float32), a, atol=1e-3
    )
