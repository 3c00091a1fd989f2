"""`pipenem list`: the suites, topologies and run configs pipenem ships, one line each."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from basics.errors import ConfigError
from basics.terminal import make_console

KINDS = ("suites", "topologies", "configs")


def list_cmd(
    kind: Annotated[str | None, typer.Argument(help="suites, topologies or configs (default: all three)")] = None,
) -> None:
    """What ships with pipenem: every suite, topology and run config a command takes by name."""
    from basics.shipped import listing

    if kind is not None and kind not in KINDS:
        raise ConfigError("KIND", f"{kind!r}: one of {', '.join(KINDS)}")
    console = make_console()
    for plural, singular in (("suites", "suite"), ("topologies", "topology"), ("configs", "config")):
        if kind not in (None, plural):
            continue
        table = Table(title=f"{plural} (`pipenem {_use(singular)} NAME`)", title_justify="left")
        table.add_column("name", no_wrap=True)
        table.add_column("what it is")
        for item in listing(singular):
            table.add_row(item.name, item.summary)
        console.print(table)


def _use(kind: str) -> str:
    return {"suite": "run", "topology": "topo show", "config": "train"}[kind]
