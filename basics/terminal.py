"""The one way pipenem makes a rich console: full-width lines when output goes to a file.

rich assumes 80 columns when stdout is not a terminal (CI, ``nohup``, a pipe), which wraps
every result table cell by cell; a log gets wide lines instead (COLUMNS still wins)."""

from __future__ import annotations

import os

from rich.console import Console

LOG_WIDTH = 240


def make_console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    if probe.is_terminal or os.environ.get("COLUMNS"):
        return probe
    return Console(stderr=stderr, width=LOG_WIDTH)
