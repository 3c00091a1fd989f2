"""Building a report (figures, HTML, verdicts) from the result tables."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from reports import figures, html
from reports.tables import load
from reports.verdicts import Verdict, verdicts
from testbed.errors import ConfigError

console = Console()


def build_report(results: Path, out: Path | None = None, title: str = "pipenem report") -> tuple[Path, list[Verdict]]:
    if not (results / "trials.parquet").exists():
        raise ConfigError("DIR", f"{results} has no trials.parquet: run `pipenem run SUITE --out {results}` first")
    out = out or results
    tables = load(results)
    figs = figures.render_all(tables, out)
    vs = verdicts(tables)
    path = html.write(out, tables, figs, vs, title)
    return path, vs


def verdict_table(vs: list[Verdict]) -> Table:
    table = Table(title="Beyond Top-K: claims vs measured")
    for col in ("claim", "measured", "bound", "verdict"):
        table.add_column(col)
    for v in vs:
        colour = "green" if v.verdict.startswith("reproduced") else ("yellow" if "bound" in v.verdict else "red")
        table.add_row(v.claim, v.measured, v.bound, f"[{colour}]{v.verdict}[/]")
    return table
