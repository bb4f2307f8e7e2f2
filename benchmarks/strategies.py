"""Batching strategies side by side, and plans per second against batch size.

A thin wrapper kept for old habits: the suite lives in the package (``aiplanner.bench.strategies``)
and this script is the same as

    python -m aiplanner bench --suites strategies [--backend B] [--quick] [--out DIR] ...

Every option of ``bench`` is passed through (``python -m aiplanner bench --help``).
"""

from __future__ import annotations

import sys

from aiplanner.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "--suites", "strategies", *sys.argv[1:]]))
