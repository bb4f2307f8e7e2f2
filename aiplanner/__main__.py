"""``python -m aiplanner``: see :mod:`aiplanner.cli`."""

from aiplanner.cli import main

raise SystemExit(main())
