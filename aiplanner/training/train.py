"""``python -m aiplanner train``: teach the embedded model the game, end to end.

1. Data: generate ``--situations`` situations from ``--seed`` and label them with the outcome
   teacher (or read ``--labels``); the labels file and its sha256 go in the output folder.
   The scenario suite (:mod:`aiplanner.scenarios`) is the test set and is never read here.
2. Split: the last ``--holdout`` fraction is held out; examples with a margin under
   ``--min-margin`` or an ambiguous best phrase are left out of training.
3. Train a LoRA adapter (see :mod:`aiplanner.training.lora` for the packing and the loss) for
   ``--steps`` steps of ``--batch`` examples, AdamW, linear warm-up then decay, everything seeded.
4. Write ``adapter.gguf`` (llama.cpp LoRA), then measure the hold-out accuracy of the decision
   (calibrated, no rules prior) with llama.cpp, base model against base model plus adapter.
5. Write ``report.json``, ``report.md`` and ``loss.png``.

``--quick`` (for the test suite): a handful of situations, a few steps on one small batch, no
hold-out pass; the report still records the loss, the adapter's hash and whether it loaded.

Needs the ``train`` extra (torch, transformers, peft, gguf, matplotlib) and ``embedded``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiplanner.actions import DEFAULT_REGISTRY
from aiplanner.errors import ConfigError, PlannerError
from aiplanner.model_path import resolve_model_path
from aiplanner.training.dataset import ScoringExample, make_examples, split_labels
from aiplanner.training.situations import generate_situations
from aiplanner.training.teacher import (
    OutcomeTeacher,
    TeacherConfig,
    file_sha256,
    load_labels,
    parse_weights,
    save_labels,
)

__all__ = ["QUICK", "TrainSettings", "add_train_parser", "teacher_config", "train", "train_main"]

REQUIRED = ("torch", "transformers", "peft", "gguf", "matplotlib", "llama_cpp")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainSettings:
    """Everything that decides the adapter (recorded in the report)."""

    situations: int = 1500
    seed: int = 0
    holdout: float = 0.15
    min_margin: float = 2.0
    rank: int = 8
    alpha: int = 16
    layers: int = 8
    lr: float = 1e-3
    batch: int = 8
    steps: int = 50
    warmup: int = 5
    threads: int = 2
    variants: int = 3
    horizon_s: float = 5.0  # the teacher's rollouts (see aiplanner.training.teacher)
    weights: str = ""  # changes to the teacher's OutcomeWeights, "name=value,..."
    round_rules: bool = False  # the teacher scores holding the objective and the round's end
    eval_limit: int = 60
    quick: bool = False


def teacher_config(settings: TrainSettings) -> TeacherConfig:
    """The teacher that labels the situations. Raises :class:`ConfigError` for bad weights."""
    return TeacherConfig(
        horizon_s=settings.horizon_s,
        variants=settings.variants,
        weights=parse_weights(settings.weights),
        round_rules=settings.round_rules,
    )


def missing_requirements() -> list[str]:
    """The modules of the ``train``/``embedded`` extras that cannot be imported here."""
    import importlib.util

    return [m for m in REQUIRED if importlib.util.find_spec(m) is None]


def train(settings: TrainSettings, out: Path, *, labels_path: Path | None = None) -> dict[str, Any]:
    """Run the pipeline into ``out``; return the report (also written as report.json).

    Raises :class:`ConfigError` for bad settings or missing extras.
    """
    missing = missing_requirements()
    if missing:
        raise ConfigError(
            f"train needs {', '.join(missing)}: pip install 'aiplanner[train,embedded]'"
        )
    import torch

    from aiplanner.training.lora import (
        CandidateScorer,
        add_lora,
        load_base,
        lora_state,
        mean_ce,
        write_lora_gguf,
    )

    if settings.batch < 1 or settings.steps < 1 or settings.rank < 1:
        raise ConfigError("batch, steps and rank must be at least 1")
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    log = _Log(out / "train.log")

    # 1. data ---------------------------------------------------------------------------------
    if labels_path is not None:
        try:
            labels = load_labels(labels_path)
        except OSError as exc:
            raise ConfigError(f"cannot read labels {labels_path}: {exc}") from exc
        data_path = labels_path
        log(f"read {len(labels)} labels from {labels_path}")
    else:
        situations = generate_situations(settings.situations, settings.seed)
        teacher = OutcomeTeacher(teacher_config(settings), DEFAULT_REGISTRY)
        t0 = time.monotonic()
        labels = teacher.label_all(
            situations,
            lambda i: log(f"labelled {i}/{len(situations)}") if i % 200 == 0 else None,
        )
        data_path = out / "labels.jsonl"
        save_labels(data_path, labels)
        log(f"labelled {len(labels)} situations in {time.monotonic() - t0:.0f} s")
    digest = file_sha256(data_path)
    train_labels, held_labels = split_labels(labels, 0.0 if settings.quick else settings.holdout)
    train_ex, dropped = make_examples(
        train_labels, DEFAULT_REGISTRY, min_margin=settings.min_margin
    )
    held_ex, _ = make_examples(held_labels, DEFAULT_REGISTRY, min_margin=0.0)
    held_ex = [e for e in held_ex if e.margin > 0]  # a tie has no right answer to count
    if not train_ex:
        raise ConfigError("no training example left after filtering; lower --min-margin")
    log(f"{len(train_ex)} training examples ({dict(dropped)} left out), {len(held_ex)} held out")

    # 2. model ----------------------------------------------------------------------------------
    gguf_path = resolve_model_path(None)
    t0 = time.monotonic()
    model, tokenizer = load_base(gguf_path)
    log(f"loaded {gguf_path.name} in {time.monotonic() - t0:.0f} s")
    cfg = model.config
    model = add_lora(model, settings.rank, settings.alpha, settings.seed, settings.layers)
    scorer = CandidateScorer(model, tokenizer)
    eval_set = (held_ex if not settings.quick else train_ex[: settings.batch])[
        : settings.eval_limit
    ]
    probe = eval_set[:1] or train_ex[:1]
    with torch.no_grad():
        hf_before = [round(float(v), 4) for v in scorer.examples_scores(probe)[0][0]]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)

    def lr_at(step: int) -> float:
        if step < settings.warmup:
            return (step + 1) / settings.warmup
        span = max(1, settings.steps - settings.warmup)
        return max(0.05, 1.0 - (step - settings.warmup) / span)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    order = _batches(len(train_ex), settings, random.Random(settings.seed))
    losses: list[float] = []
    model.train()
    t0 = time.monotonic()
    for step, idx in enumerate(order):
        batch = [train_ex[i] for i in idx]
        raw, base = scorer.examples_scores(batch)
        loss = mean_ce(raw, base, [e.best for e in batch])
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.item()))
        if step % 10 == 0 or step == len(order) - 1:
            took = time.monotonic() - t0
            log(f"step {step + 1}/{len(order)} loss {losses[-1]:.4f} ({took:.0f} s)")
    train_s = time.monotonic() - t0
    model.eval()
    with torch.no_grad():
        hf_after = [round(float(v), 4) for v in scorer.examples_scores(probe)[0][0]]

    # 3. adapter (the peft folder too: it converts again without retraining) ----------------
    model.save_pretrained(str(out / "peft"))
    adapter = out / "adapter.gguf"
    write_lora_gguf(
        adapter,
        lora_state(model),
        alpha=settings.alpha,
        n_head=cfg.num_attention_heads,
        n_head_kv=cfg.num_key_value_heads,
    )
    adapter_sha = file_sha256(adapter)
    log(f"adapter {adapter} ({adapter.stat().st_size / 1e6:.1f} MB) sha256 {adapter_sha}")
    del model, scorer, optimizer

    # 4. the decision with llama.cpp, before and after -----------------------------------------
    # One llama.cpp thread: on a shared two-core machine its OpenMP threads spin against the
    # other processes (measured under load 5: three examples in 6 s with one thread, 45 s with
    # two). The figures do not depend on the thread count.
    before = _llama_eval(gguf_path, None, eval_set, 1)
    after = _llama_eval(gguf_path, adapter, eval_set, 1)
    log(f"decision accuracy ({len(eval_set)} examples): before {before}, after {after}")
    suite: dict[str, Any] = {}
    if not settings.quick:  # the scenario suite: the test set, measured here, never trained on
        from aiplanner.training.evaluate import suite_scores

        suite = {
            "base": suite_scores(gguf_path, None),
            "adapter": suite_scores(gguf_path, adapter),
        }
        log(f"scenario suite: {suite}")

    report: dict[str, Any] = {
        "settings": asdict(settings),
        "teacher": teacher_config(settings).to_dict(),
        "command": "python -m aiplanner train " + " ".join(_argv_of(settings, labels_path)),
        "data": {
            "labels_file": str(data_path),
            "labels_sha256": digest,
            "labels": len(labels),
            "train_labels": len(train_labels),
            "holdout_labels": len(held_labels),
            "train_examples": len(train_ex),
            "left_out": dict(dropped),
            "holdout_examples": len(held_ex),
            "best_index_train": dict(sorted(Counter(e.best for e in train_ex).items())),
            "best_index_holdout": dict(sorted(Counter(e.best for e in held_ex).items())),
        },
        "model": {"gguf": gguf_path.name, "gguf_sha256": file_sha256(gguf_path)},
        "loss": {"first": losses[0], "last": losses[-1], "curve": [round(v, 5) for v in losses]},
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "adapter": {
            "file": str(adapter),
            "bytes": adapter.stat().st_size,
            "sha256": adapter_sha,
        },
        "eval_set": "train batch (quick)" if settings.quick else "hold-out",
        "before": before,
        "after": after,
        "torch_first_example_scores": {"before": hf_before, "after": hf_after},
        "suite": suite,
        "versions": _versions(),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(losses, out / "loss.png")
    (out / "report.md").write_text(_markdown(report))
    log(f"done in {report['total_seconds']} s: {out / 'report.md'}")
    return report


def _batches(n: int, settings: TrainSettings, rng: random.Random) -> list[list[int]]:
    """Example indices per step: shuffled epochs (``--quick``: the same first batch each step)."""
    if settings.quick:
        first = list(range(min(n, settings.batch)))
        return [first for _ in range(settings.steps)]
    out: list[list[int]] = []
    pool: list[int] = []
    while len(out) < settings.steps:
        if len(pool) < settings.batch:
            fresh = list(range(n))
            rng.shuffle(fresh)
            pool += fresh
        out.append(pool[: settings.batch])
        pool = pool[settings.batch :]
    return out


def _llama_eval(
    gguf: Path, adapter: Path | None, examples: Sequence[ScoringExample], threads: int
) -> dict[str, Any]:
    from aiplanner.training.evaluate import LlamaScorer, accuracy, pick

    scorer = LlamaScorer(gguf, adapter, n_threads=threads)
    try:
        raw, base = scorer.example_scores(examples)
    finally:
        scorer.close()
    calibrated = accuracy([pick(r, b) for r, b in zip(raw, base, strict=True)], examples)
    plain = accuracy([pick(r) for r in raw], examples)
    rules = accuracy([0] * len(examples), examples)
    return {
        "calibrated": calibrated.to_dict(),
        "raw": plain.to_dict(),
        "rules_first": rules.to_dict(),
        "first_example_scores": [round(v, 4) for v in raw[0]] if raw else [],
    }


def _plot(losses: Sequence[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    ax.plot(range(1, len(losses) + 1), losses, lw=0.8, color="#888", label="batch loss")
    window = max(1, len(losses) // 20)
    if window > 1:
        smooth = [
            sum(losses[max(0, i - window + 1) : i + 1])
            / len(losses[max(0, i - window + 1) : i + 1])
            for i in range(len(losses))
        ]
        ax.plot(range(1, len(losses) + 1), smooth, lw=1.6, color="#5a3", label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title("LoRA training loss: the teacher's best among the candidates")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _markdown(r: dict[str, Any]) -> str:
    b, a, d = r["before"], r["after"], r["data"]
    lines = [
        "# Training report",
        "",
        f"- command: `{r['command']}`",
        f"- settings: `{json.dumps(r['settings'])}`",
        f"- data: {d['labels']} labelled situations, sha256 `{d['labels_sha256']}`; "
        f"{d['train_examples']} training examples (left out: {d['left_out']}), "
        f"{d['holdout_examples']} held-out examples",
        f"- model: {r['model']['gguf']} (sha256 `{r['model']['gguf_sha256']}`)",
        f"- loss: first {r['loss']['first']:.4f}, last {r['loss']['last']:.4f} (loss.png)",
        f"- adapter: {r['adapter']['bytes']} bytes, sha256 `{r['adapter']['sha256']}`",
        f"- training {r['train_seconds']} s, total {r['total_seconds']} s",
        "",
        f"Decision accuracy on the {r['eval_set']} (teacher's best chosen), llama.cpp:",
        "",
        "| decision | base model | with adapter |",
        "| --- | --- | --- |",
        f"| calibrated, no rules prior | {_cell(b['calibrated'])} | {_cell(a['calibrated'])} |",
        f"| raw log-likelihood | {_cell(b['raw'])} | {_cell(a['raw'])} |",
        f"| rules' first candidate | {_cell(b['rules_first'])} | {_cell(a['rules_first'])} |",
        *_suite_lines(r.get("suite") or {}),
        "",
        f"Versions: {r['versions']}",
        "",
    ]
    return "\n".join(lines)


def _suite_lines(suite: dict[str, Any]) -> list[str]:
    if not suite:
        return []
    lines = [
        "",
        "Scenario suite (the test set, never trained on): sensible first actions, and the",
        "decision's overrules of the rules' first choice (right / all; fixes, breaks):",
        "",
        "| model | decision | sensible | overrules right | fixes | breaks |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    first = next((f for rows in suite.values() for f in rows.values()), None)
    if first is not None:
        right = first["decisions"] - first["rules_wrong"]
        lines.append(
            f"| rules alone | first candidate | {right}/{first['decisions']} | - | - | - |"
        )
    for model, rows in suite.items():
        for name, f in rows.items():
            lines.append(
                f"| {model} | {name.split(' ', 1)[-1]} | {f['sensible']}/{f['decisions']} | "
                f"{f['overrides_right']}/{f['overrides']} | {f['fixes']} | {f['breaks']} |"
            )
    return lines


def _cell(acc: dict[str, Any]) -> str:
    over = (
        f"; overrules {acc['overrules_right']}/{acc['overrules']} right" if acc["overrules"] else ""
    )
    return f"{acc['right']}/{acc['n']} ({100 * acc['rate']:.1f}%){over}"


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "peft", "gguf", "llama-cpp-python"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "missing"
    return out


def _argv_of(s: TrainSettings, labels: Path | None = None) -> list[str]:
    """The command-line flags that give ``s`` (and read ``labels``, if given)."""
    defaults = TrainSettings()
    out = [] if labels is None else ["--labels", shlex.quote(str(labels))]
    for key, value in asdict(s).items():
        if value != getattr(defaults, key):
            flag = "--" + key.replace("_", "-")
            out += [flag] if value is True else [flag, shlex.quote(str(value))]
    return out


class _Log:
    def __init__(self, path: Path) -> None:
        self._path = path
        path.write_text("")

    def __call__(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {line}", flush=True)
        with self._path.open("a") as f:
            f.write(f"[{stamp}] {line}\n")


def add_train_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``train`` on the command line's subcommands."""
    d = TrainSettings()
    p = sub.add_parser("train", help="train the LoRA adapter that teaches the model the game")
    p.add_argument("--out", type=Path, default=Path("train-out"), help="output folder")
    p.add_argument("--labels", type=Path, help="read labelled situations instead of generating")
    p.add_argument("--quick", action="store_true", help="a few steps on a handful (for tests)")
    ints = ("situations", "seed", "rank", "layers", "batch", "steps", "warmup", "threads")
    for name in (*ints, "alpha", "variants", "eval_limit"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("holdout", "min_margin", "lr", "horizon_s"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--weights", default=d.weights, help="teacher weights, e.g. 'hold=20,win=200'")
    p.add_argument("--round-rules", action="store_true", help="the teacher plays the round's rules")


QUICK = {
    "situations": 8,
    "steps": 3,
    "batch": 2,
    "layers": 2,
    "warmup": 1,
    "lr": 3e-3,
    "variants": 1,
}
"""What ``--quick`` changes, unless given explicitly."""


def train_main(args: argparse.Namespace) -> int:
    """Run ``train`` from parsed arguments; 2 on a usage error."""
    names = {f for f in TrainSettings.__dataclass_fields__ if f != "quick"}
    values = {k: v for k, v in vars(args).items() if k in names}
    if args.quick:
        defaults = TrainSettings()
        for key, value in QUICK.items():
            if values[key] == getattr(defaults, key):
                values[key] = value
    try:
        settings = TrainSettings(quick=args.quick, **values)
        train(settings, args.out, labels_path=args.labels)
    except PlannerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
