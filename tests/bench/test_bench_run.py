"""``bench --quick --backend scripted``: every suite runs, JSON is valid, the PNGs are drawn."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from aiplanner.bench import (
    BenchOptions,
    Progress,
    QuietProgress,
    Suite,
    SuiteResult,
    register,
    run_suites,
    suites,
)
from aiplanner.bench.registry import suite_names
from aiplanner.cli import main
from aiplanner.errors import ConfigError

BUILTIN = ("tokens", "strategies", "decisions", "tick", "frame", "soak")


def _non_blank(png: Path) -> bool:
    from matplotlib.image import imread

    pixels = imread(str(png))
    return pixels.ndim == 3 and float(pixels[..., :3].std()) > 0.05


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    status = main(["bench", "--quick", "--backend", "scripted", "--out", str(out), "--quiet"])
    assert status == 0, (out / "results.md").read_text()
    return out


def test_quick_run_writes_json_with_every_suite(quick_run: Path) -> None:
    doc = orjson.loads((quick_run / "results.json").read_bytes())
    assert doc["meta"]["options"]["backend"] == "scripted" and doc["meta"]["options"]["quick"]
    assert set(BUILTIN) <= set(doc["suites"])
    for name in BUILTIN:
        result = doc["suites"][name]
        assert "error" not in result, (name, result.get("error"))
    for name in ("strategies", "decisions", "tick", "soak", "frame"):  # the extras have pygame
        assert doc["suites"][name]["metrics"], name
    for name, result in doc["suites"].items():
        for label, m in result.get("metrics", {}).items():
            assert m["min"] <= m["median"] <= m["max"], (name, label)
            assert m["better"] in ("lower", "higher")
    walls = doc["suites"]["strategies"]["metrics"]["round wall s, packed"]["values"]
    assert len(walls) == 2  # --quick: two repetitions (compare needs several)
    shares = doc["suites"]["strategies"]["metrics"]["model share, sequential"]["values"]
    assert all(s == 1.0 for s in shares)  # the scripted model answers every agent correctly
    decisions = doc["suites"]["decisions"]["metrics"]
    rules, floor = decisions["sensible rate, rules"], decisions["sensible rate, random"]
    assert 0.0 < floor["median"] < rules["median"] <= 1.0
    assert "sensible rate, guided-score" in decisions  # a model planner through the pipeline


def test_quick_run_draws_non_blank_plots_and_a_table(quick_run: Path) -> None:
    pngs = sorted(p.name for p in quick_run.glob("*.png"))
    expected = {
        "strategies_latency",
        "strategies_batch_size",
        "tick_cost",
        "decisions",
        "soak_ticks",
    }
    assert {f"{name}.png" for name in expected} <= set(pngs)
    for png in quick_run.glob("*.png"):
        assert _non_blank(png), png
    table = (quick_run / "results.md").read_text()
    assert "## strategies" in table and "| round wall s, sequential |" in table


def test_a_run_compared_with_itself_passes(
    quick_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = str(quick_run / "results.json")
    assert main(["bench", "compare", results, results]) == 0
    assert "0 regression(s)" in capsys.readouterr().out


def test_a_registered_suite_runs_and_a_failing_one_is_recorded(tmp_path: Path) -> None:
    from aiplanner.bench.stats import metric

    def answer(opts: BenchOptions, progress: Progress) -> SuiteResult:
        progress.note("answering")
        return {"metrics": {"answer": metric([opts.agents], "agents")}}

    def broken(opts: BenchOptions, progress: Progress) -> SuiteResult:
        raise RuntimeError("measuring went wrong")

    register(Suite("answer_suite", answer, "a test suite"))
    register(Suite("broken_suite", broken, "a failing test suite"))
    try:
        doc = run_suites(
            BenchOptions(backend="scripted", agents=42),
            ["answer_suite", "broken_suite"],
            tmp_path,
            QuietProgress(),
        )
    finally:
        from aiplanner.bench import registry

        registry._SUITES.pop("answer_suite")
        registry._SUITES.pop("broken_suite")
    got = doc["suites"]
    assert isinstance(got, dict)
    assert got["answer_suite"]["metrics"]["answer"]["median"] == 42
    assert "measuring went wrong" in got["broken_suite"]["error"]
    assert "Failed: RuntimeError: measuring went wrong" in (tmp_path / "results.md").read_text()
    assert set(suite_names()) == {s.name for s in suites()} >= set(BUILTIN)


def test_unknown_suite_and_bad_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown suite"):
        run_suites(BenchOptions(), ["nope"], tmp_path, QuietProgress())
    with pytest.raises(ConfigError):
        register(Suite("not a name", lambda o, p: {}, ""))


def test_list_names_every_suite(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for name in BUILTIN:
        assert name in out
