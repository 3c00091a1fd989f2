"""Reading a user's YAML file: a missing file or malformed YAML is one ConfigError, with the position."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from testbed.errors import ConfigError


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed document of ``path``; ``what`` names the kind of file in messages ("topology")."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"{what} file {str(path)!r} not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"malformed YAML{where}: {getattr(exc, 'problem', None) or exc}", str(path)) from None
