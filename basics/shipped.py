"""The files pipenem ships (suites, topologies, run configs), found by name from any folder.

In a checkout they are the repository's ``suites/``, ``topologies/`` and ``configs/``; in a
wheel the data package ``pipenem_data`` (read with ``importlib.resources``). A command
takes a file by path or a shipped one by name (``ci-throughput``, ``scale/64stage``, with or
without ``.yaml``); an existing path always wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from basics.errors import ConfigError

KINDS = {"suite": "suites", "topology": "topologies", "config": "configs"}
SUFFIXES = (".yaml", ".yml")


def shipped_dir(kind: str) -> Path:
    """The folder the shipped files of ``kind`` are in (a real folder: checkouts and wheels alike)."""
    return Path(str(resources.files(f"pipenem_data.{KINDS[kind]}")))


@dataclass(frozen=True)
class Shipped:
    kind: str
    name: str  # how a command names it: its path below the kind's folder, without .yaml
    path: Path

    @property
    def summary(self) -> str:
        """The first sentence of the file's leading comment or docstring (what it is), '' without one."""
        words: list[str] = []
        for line in self.path.read_text(errors="replace").splitlines():
            text = line.strip()
            if text.startswith('"""'):
                text = text.strip('"')
            elif text.startswith("#"):
                text = text.lstrip("#").strip()
            elif words:
                break
            else:
                continue
            if not text:
                if words:
                    break
                continue
            words.append(text)
        para = " ".join(words)
        end = para.find(". ")
        first = para[: end + 1 if end >= 0 else len(para)].strip()
        return first if len(first) <= 110 else first[:109].rstrip() + "…"


def listing(kind: str) -> list[Shipped]:
    """Every shipped file of ``kind``, by name."""
    root = shipped_dir(kind)
    files = sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES or (kind == "topology" and p.suffix == ".py"))
    return [Shipped(kind, p.relative_to(root).with_suffix("").as_posix(), p) for p in files if p.name != "__init__.py"]


def find(kind: str, name_or_path: str | Path, field: str) -> Path:
    """A file by path (it exists: it wins) or a shipped one by name; ConfigError naming ``field``
    and the shipped names otherwise."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    root = shipped_dir(kind)
    text = str(name_or_path)
    for cand in (text, *(text + s for s in SUFFIXES), text + ".py"):
        if not Path(cand).is_absolute() and (root / cand).is_file():
            return root / cand
    if "/" in text or Path(text).suffix:  # meant as a file
        raise ConfigError(field, f"{kind} file {text!r} not found (`pipenem list` shows the shipped ones)")
    names = ", ".join(s.name for s in listing(kind))
    raise ConfigError(field, f"no file and no shipped {kind} named {text!r} was found (shipped: {names})")


def shipped(kind: str, name: str) -> Path:
    """A shipped file by name (for a paper's own suites: never a file in the current folder)."""
    root = shipped_dir(kind)
    for cand in (name, *(name + s for s in SUFFIXES)):
        if (root / cand).is_file():
            return root / cand
    raise ConfigError("", f"the shipped {kind} {name!r} is missing from this installation ({root})")
