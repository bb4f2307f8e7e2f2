"""``python -m demo_game``: see :mod:`demo_game.app` for the options and the main loop."""

from demo_game.app import main

if __name__ == "__main__":
    raise SystemExit(main())
