"""A self-contained report.html (images embedded) plus CSV copies of every table."""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

import pandas as pd

from harness.results.schema import REPORT_TRIAL_COLUMNS
from reports.figures import Figure
from reports.summary import CONVERGENCE_NOTE, convergence_summary, throughput_summary
from reports.tables import Tables, provenance
from reports.verdicts import Verdict

# wide tables scroll inside their own box: the page itself never scrolls sideways
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
.wide{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f3f3f3}figure{margin:2em 0}figcaption{font-size:13px;color:#444}img{max-width:100%}
.reproduced{color:#16691e;font-weight:600}.not{color:#a40000;font-weight:600}.bound{color:#7a4c00;font-weight:600}"""


def _table(df: pd.DataFrame) -> str:
    return "<div class='wide'>" + df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-") + "</div>"


def _cls(verdict: str) -> str:
    if verdict.startswith("reproduced"):
        return "reproduced"
    if "bound" in verdict or verdict.startswith("inconclusive"):
        return "bound"
    return "not"


def write(
    out: Path, tables: Tables, figures: list[Figure], verdicts: list[Verdict], title: str = "pipenem report"
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}</style>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Generated {time.strftime('%Y-%m-%d %H:%M:%S')} from the result tables. "
        f"{html.escape(provenance(tables.ok))}.</p>",
    ]
    if verdicts:
        parts.append(
            "<h2>Claims</h2><p>Measured values with their 95% interval and n (seeds for convergence, steps "
            "for throughput). A verdict is decided only when the whole interval clears the rule's threshold; "
            "otherwise it is inconclusive.</p><div class='wide'><table><tr><th>claim</th><th>as published</th>"
            "<th>measured</th><th>bound</th><th>verdict</th><th>reason</th></tr>"
        )
        for v in verdicts:
            measured = html.escape(v.measured) + (f"<br><i>{html.escape(v.explanation)}</i>" if v.explanation else "")
            parts.append(
                f"<tr><td>{html.escape(v.claim)}</td><td>{html.escape(v.published)}</td><td>{measured}</td>"
                f"<td>{html.escape(v.bound)}</td><td class='{_cls(v.verdict)}'>{html.escape(v.shown)}</td>"
                f"<td>{html.escape(v.reason)}</td></tr>"
            )
        parts.append("</table></div>")
    conv = convergence_summary(tables)
    if not conv.empty:
        parts.append(f"<h2>Convergence over seeds</h2><p>{html.escape(CONVERGENCE_NOTE)}</p>" + _table(conv))
    thr = throughput_summary(tables)
    if not thr.empty:
        parts.append(
            "<h2>Throughput over the emulated links</h2><p>Seconds per step: mean and 95% t-interval over the "
            "steps after the first (warm-up); link wire ratio = dense bytes / bytes the links carried; "
            "codec_s = encode + decode seconds per step of the stage that spends the most on them, "
            "codec_share = codec_s / step_s (codec: real = timed on this host's CPU, modeled = bytes / "
            "the profile's memory bandwidth).</p>" + _table(thr)
        )
    if verdicts:
        pd.DataFrame([v.row() for v in verdicts]).to_csv(out / "verdicts.csv", index=False)
    for fig in figures:
        data = base64.b64encode(fig.path.read_bytes()).decode()
        parts.append(
            f"<figure><img src='data:image/png;base64,{data}' alt='{fig.name}'>"
            f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
        )
    t = tables.trials
    if not t.empty:
        cols = [c for c in REPORT_TRIAL_COLUMNS if c in t.columns]
        parts.append("<h2>Trials</h2>" + _table(t[cols]))
    lk = tables.links
    if not lk.empty:
        tot = lk[lk["window"] == -1].copy()
        if not tot.empty:
            tot["overhead"] = tot["interface_bytes"] / tot["payload_bytes"]
            parts.append(
                "<h2>Bytes per link (payload vs interface counters)</h2>"
                + _table(tot[["trial_id", "link", "direction", "payload_bytes", "interface_bytes", "overhead"]])
            )
    for name in ("trials", "steps", "links", "fidelity"):
        df = getattr(tables, name)
        if not df.empty:
            df.to_csv(out / f"{name}.csv", index=False)
    parts.append(
        "<p>CSV copies: trials.csv, steps.csv, links.csv, fidelity.csv"
        + (", verdicts.csv" if verdicts else "")
        + ".</p>"
    )
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path
