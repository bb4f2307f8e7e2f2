"""Suite ``decisions``: how sensible each planner's first step is on the scenario suite.

The scenario suite shipped with the package (:mod:`aiplanner.scenarios`) scored by
:func:`aiplanner.evaluation.evaluate`: the rules, the random floor (mean over draws) and the
model planners of :data:`~aiplanner.evaluation.MODEL_PLANNERS` through the real pipeline (only
``guided-score``, the default path, with ``--quick``, on every sixth scenario). Figures per
planner: the sensible-first-step, valid and agree-with-the-rules rates, the largest share of any
one candidate position (1.0 is a planner that answers the same everywhere) and seconds per
decision. Decisions at temperature 0 are deterministic, so each is measured once.
"""

from __future__ import annotations

import anyio

from aiplanner.bench.options import BenchOptions, Plot, Series, SuiteResult
from aiplanner.bench.progress import Progress
from aiplanner.bench.stats import Metric, metric

__all__ = ["run"]

_BASELINES = ("rules", "random")


def run(opts: BenchOptions, progress: Progress) -> SuiteResult:
    # Imported here: the CLI (and every other suite) keeps working whatever the scorer's state.
    from aiplanner.evaluation import MODEL_PLANNERS, Report, evaluate, make_planner
    from aiplanner.scenarios import load_scenarios

    scenarios = load_scenarios()
    if opts.quick:
        scenarios = scenarios[::6]
    backend = opts.make_backend()
    models = () if backend is None else ("guided-score",) if opts.quick else tuple(MODEL_PLANNERS)
    names = (*_BASELINES, *models)
    reports: dict[str, Report] = {}
    try:
        for name in progress.track(names, "decisions", len(names)):
            planner = make_planner(name, backend, seed=opts.seed)
            draws = (20 if opts.quick else 50) if name == "random" else 1
            reports[name] = evaluate(planner, scenarios, draws=draws)
    finally:
        if backend is not None:
            anyio.run(backend.aclose)
    metrics: dict[str, Metric] = {}
    for name, report in reports.items():
        o = report.overall
        metrics[f"sensible rate, {name}"] = metric([o.sensible_rate], "share", "higher")
        metrics[f"valid rate, {name}"] = metric([o.valid_rate], "share", "higher")
        metrics[f"agree with rules, {name}"] = metric([o.agree_rate], "share", "higher")
        if name in _BASELINES:  # their spread and speed say nothing about a model
            continue
        metrics[f"max position share, {name}"] = metric([o.max_position_share], "share")
        metrics[f"seconds per decision, {name}"] = metric([report.seconds_per_decision], "s")
    roles = sorted({role for r in reports.values() for role in r.roles})
    plot = Plot(
        name="decisions",
        kind="bar",
        title=f"Sensible first steps on {len(scenarios)} scenarios, by role",
        xlabel="scenarios",
        ylabel="share sensible",
        series={
            name: Series(
                x=["all", *roles],
                y=[
                    r.overall.sensible_rate,
                    *(r.roles[x].sensible_rate if x in r.roles else 0.0 for x in roles),
                ],
            )
            for name, r in reports.items()
        },
    )
    info: dict[str, object] = {"scenarios": len(scenarios), "planners": list(reports)}
    return {"metrics": metrics, "plots": [plot], "info": info}
