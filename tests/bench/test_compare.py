"""bench compare: identical runs pass, a planted 2x regression is flagged, noise is not."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from aiplanner.bench.compare import compare_results, format_changes
from aiplanner.bench.stats import metric
from aiplanner.cli import main


def _doc(wall: list[float], rate: list[float], tokens: float = 120.0) -> dict[str, object]:
    return {
        "format": 1,
        "suites": {
            "strategies": {
                "metrics": {
                    "round wall s, sequential": metric(wall, "s"),
                    "plans per s, sequential": metric(rate, "plans/s", "higher"),
                }
            },
            "tokens": {"metrics": {"input tokens": metric([tokens], "tokens")}},
            "frame": {"skipped": "no pygame"},
        },
    }


BASE = _doc([5.0, 5.3, 5.1], [2.0, 1.9, 1.95])


def _save(tmp_path: Path, name: str, doc: dict[str, object]) -> str:
    path = tmp_path / name
    path.write_bytes(orjson.dumps(doc))
    return str(path)


def test_identical_files_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = _save(tmp_path, "old.json", BASE), _save(tmp_path, "new.json", BASE)
    assert main(["bench", "compare", old, new]) == 0
    assert capsys.readouterr().out.startswith("0 regression(s), 0 improvement(s) in 3 figures")
    assert {c.verdict for c in compare_results(BASE, BASE)} == {"same"}


def test_planted_2x_regression_is_flagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slower = _doc([10.0, 10.6, 10.2], [2.0, 1.9, 1.95])
    old, new = _save(tmp_path, "old.json", BASE), _save(tmp_path, "new.json", slower)
    assert main(["bench", "compare", old, new]) == 1
    out = capsys.readouterr().out
    assert "1 regression(s)" in out
    assert "| strategies | round wall s, sequential |" in out and "2.00x" in out
    # and the other way round it is an improvement, not a regression
    assert main(["bench", "compare", new, old]) == 0
    assert "1 improvement(s)" in capsys.readouterr().out


def test_higher_is_better_figures_regress_when_they_fall() -> None:
    halved = _doc([5.0, 5.3, 5.1], [1.0, 0.95, 0.97])
    verdicts = {c.metric: c.verdict for c in compare_results(BASE, halved)}
    assert verdicts["plans per s, sequential"] == "regression"
    assert verdicts["round wall s, sequential"] == "same"


def test_moves_within_the_noise_are_not_flagged() -> None:
    noisy_old = _doc([4.0, 5.0, 6.0], [2.0, 1.9, 1.95])
    noisy_new = _doc([5.0, 6.0, 7.0], [2.0, 1.9, 1.95])  # +20 %, ranges overlap, spread 40 %
    assert all(c.verdict == "same" for c in compare_results(noisy_old, noisy_new))
    slightly = _doc([5.0, 5.3, 5.1], [2.0, 1.9, 1.95], tokens=126.0)  # +5 %: under the floor
    assert all(c.verdict == "same" for c in compare_results(BASE, slightly))


def test_new_gone_and_zero_figures_are_listed_not_judged() -> None:
    other: dict[str, object] = {
        "suites": {"tokens": {"metrics": {"zero": metric([0.0], "x"), "fresh": metric([1], "x")}}}
    }
    base: dict[str, object] = {"suites": {"tokens": {"metrics": {"zero": metric([0.0], "x")}}}}
    verdicts = {c.metric: c.verdict for c in compare_results(base, other)}
    assert verdicts == {"zero": "no ratio", "fresh": "new"}
    gone = {c.metric: c.verdict for c in compare_results(other, base)}
    assert gone["fresh"] == "gone"
    assert "0 regression(s)" in format_changes(compare_results(other, base), everything=True)


def test_files_that_are_not_results_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _save(tmp_path, "bad.json", {"hello": 1})
    assert main(["bench", "compare", bad, bad]) == 2
    assert "not a bench results file" in capsys.readouterr().err
    broken = _save(tmp_path, "broken.json", {"suites": {"s": {"metrics": {"m": {"median": 1}}}}})
    assert main(["bench", "compare", broken, broken]) == 2
    assert main(["bench", "compare", str(tmp_path / "nope.json"), bad]) == 2
