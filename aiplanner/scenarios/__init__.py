"""The scenario suite: hand-written situations with the first actions that make sense in them.

The suite ships as package data (one JSON file per role, read through :mod:`importlib.resources`,
so it works from an installed wheel as well as from a checkout); :mod:`aiplanner.evaluation`
scores planners on it. ``aiplanner/scenarios/author.py`` holds the situations as written and
rewrites the JSON files from them.
"""

from aiplanner.scenarios._suite import (
    Acceptable,
    Judgement,
    Scenario,
    load_scenarios,
    parse_scenarios,
    suite_files,
)

__all__ = [
    "Acceptable",
    "Judgement",
    "Scenario",
    "load_scenarios",
    "parse_scenarios",
    "suite_files",
]
