"""Reading a user's YAML file: every problem is one ConfigError naming the file (and the position).

Refused, not guessed: a file that is not UTF-8 text, malformed YAML, a mapping that gives
the same key twice (YAML would silently keep the last one), and a document whose aliases
expand it beyond any config's size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from basics.errors import ConfigError

MAX_VALUES = 100_000  # values a document may expand to, aliases followed (configs hold hundreds)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, and a document that expands, its
    aliases (``*name``) followed, to more than :data:`MAX_VALUES` values: a few nested aliases
    would otherwise grow to gigabytes once a config is validated or copied (a "YAML bomb")."""

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            total = _expanded(node, {})
            if total > MAX_VALUES:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"the document expands to {total:,} values once its aliases are followed (at most {MAX_VALUES:,})",
                    node.start_mark,
                )
        return node


def _expanded(node: yaml.Node, seen: dict[int, int]) -> int:
    """How many values ``node`` stands for with every alias written out (memoised: linear)."""
    if id(node) in seen:
        return seen[id(node)]
    seen[id(node)] = MAX_VALUES + 1  # a cycle expands without end
    if isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded(n, seen) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded(k, seen) + _expanded(v, seen) for k, v in node.value)
    else:
        total = 1
    seen[id(node)] = min(total, 10 * MAX_VALUES)
    return seen[id(node)]


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
