"""Reading a user's YAML file: every problem is one ConfigError naming the file (and the position).

Refused, not guessed: a file that is not UTF-8 text, malformed YAML, a mapping that gives
the same key twice (YAML would silently keep the last one), and aliases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from basics.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, and aliases (``*name``): a few
    nested aliases expand into gigabytes once a config is validated or copied (a "YAML bomb"),
    and a config never needs them."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed: write the value out", event.start_mark
            )
        return super().compose_node(parent, index)


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            dup = key in seen
        except TypeError:  # an unhashable key: let the base constructor report it
            break
        if dup:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key].line + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str) -> Any:
    """The parsed document; ConfigError (with line and column) on malformed YAML or a duplicate key."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        kind = "duplicate key" if str(problem).startswith("duplicate key") else "malformed YAML"
        detail = str(problem).removeprefix("duplicate key ") if kind == "duplicate key" else problem
        raise ConfigError("", f"{kind}{where}: {detail}", source) from None


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed document of ``path``; ``what`` names the kind of file in messages ("topology")."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", f"{what} file {str(path)!r} not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "", f"the {what} file is not UTF-8 text (byte {exc.start}: {exc.object[exc.start]:#04x})", str(path)
        ) from None
    except OSError as exc:
        raise ConfigError("", f"cannot read the {what} file: {exc.strerror or exc}", str(path)) from None
    return parse_yaml(text, str(path))
