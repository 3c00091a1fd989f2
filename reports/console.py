"""Building a report (figures, HTML, and a paper's verdicts when one is given) from the result tables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.table import Table
from rich.text import Text

from basics.errors import ConfigError
from basics.terminal import make_console
from reports import figures, html
from reports.figures import Published
from reports.summary import convergence_summary, fmt_interval
from reports.tables import Tables, load
from reports.verdicts import Verdict

console = make_console()


def build_report(
    results: Path,
    out: Path | None = None,
    title: str = "pipenem report",
    pub: Published | None = None,
    claims: Callable[[Tables], list[Verdict]] | None = None,
) -> tuple[Path, list[Verdict]]:
    """report.html, PNGs and CSVs from RESULTS' tables. A paper's report passes what it
    published (``pub``, drawn beside the measurements) and its ``claims`` (the verdicts)."""
    if not (results / "trials.parquet").exists():
        raise ConfigError("DIR", f"{results} has no trials.parquet: run `pipenem run SUITE --out {results}` first")
    out = out or results
    tables = load(results)
    figs = figures.render_all(tables, out, pub)
    vs = claims(tables) if claims else []
    path = html.write(out, tables, figs, vs, title)
    return path, vs


def verdict_table(vs: list[Verdict], title: str) -> Table:
    """Every verdict with its measurement, interval and sample count (text added literally, never as markup)."""
    table = Table(title=f"{title}: claims vs measured (95% intervals; n = seeds or steps)")
    for col in ("claim", "measured", "bound", "verdict"):
        table.add_column(col)
    for v in vs:
        colour = (
            "green"
            if v.verdict.startswith("reproduced")
            else ("yellow" if "bound" in v.verdict or v.verdict.startswith("inconclusive") else "red")
        )
        measured = v.measured + (f"\n{v.explanation}" if v.explanation else "")
        table.add_row(Text(v.claim), Text(measured), Text(v.bound), Text(v.shown, style=colour))
    return table


def summary_table(tables: Tables) -> Table:
    """Convergence per configuration: held-out loss and gap, mean [95% interval] over seeds."""
    df = convergence_summary(tables)
    table = Table(title="Convergence (twin): mean [95% t-interval] over seeds")
    if df.empty:
        return table
    extra = [c for c in df.columns if c in ("variant", "boundary_grad", "grad_clip", "norm_eps")]
    for col in ("compressor", "rate", *extra, "seeds", "held-out loss", "std", "gap"):
        table.add_column(col)
    for _, r in df.iterrows():
        table.add_row(
            Text(str(r["compressor"])),
            "-" if r["rate"] != r["rate"] else f"{r['rate']:g}",
            *(Text(str(r[c])) for c in extra),
            str(r["seeds"]),
            fmt_interval(r["eval_loss"], r["eval_lo"], r["eval_hi"]),
            f"{r['eval_std']:.3f}",
            "-" if r["compressor"] == "none" else fmt_interval(r["gap"], r["gap_lo"], r["gap_hi"], "+.3f"),
        )
    return table
