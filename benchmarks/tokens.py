"""Token counts of prompts and answers with the embedded model's own tokenizer.

A thin wrapper kept for old habits: the suite lives in the package (``aiplanner.bench.tokens``)
and this script is the same as

    python -m aiplanner bench --suites tokens [--backend B] [--quick] [--out DIR] ...

Every option of ``bench`` is passed through (``python -m aiplanner bench --help``).
"""

from __future__ import annotations

import sys

from aiplanner.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "--suites", "tokens", *sys.argv[1:]]))
