"""Which pipenem produced a result: the installed version and, run from a checkout, its commit."""

from __future__ import annotations

import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

CODE_ROOT = Path(__file__).resolve().parents[1]  # the checkout (or site-packages) holding the packages


@cache
def version() -> str:
    try:
        return metadata.version("pipenem")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


@cache
def git_commit() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes), None outside a git checkout."""
    if not (CODE_ROOT / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(CODE_ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(CODE_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def describe() -> str:
    commit = git_commit()
    return f"pipenem {version()}" + (f" (git {commit})" if commit else "")
