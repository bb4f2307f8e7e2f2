"""A pygame demo of aiplanner: two NPC squads on a battle map, planned live by a language model.

Run it with ``python -m demo_game`` (``--help`` lists the options; press H in the window for the
keys). The game logic (:mod:`demo_game.game`), maps (:mod:`demo_game.maps`) and recordings
(:mod:`demo_game.recording`) do not import pygame; only :mod:`demo_game.render` and the main loop
in :mod:`demo_game.app` do.
"""

from demo_game.game import DT, Command, Game, GameSettings
from demo_game.maps import MapError, MapSpec, available_maps, load_map
from demo_game.recording import PlanRecorder, Recording, RecordingError, load_recording

__all__ = [
    "DT",
    "Command",
    "Game",
    "GameSettings",
    "MapError",
    "MapSpec",
    "PlanRecorder",
    "Recording",
    "RecordingError",
    "available_maps",
    "load_map",
    "load_recording",
]
