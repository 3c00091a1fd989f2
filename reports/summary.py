"""Per-configuration summaries over seeds and steps: what the report's tables print.

Every convergence number is a mean with its 95% interval over seeds (reports/stats.py);
the baseline's own seed-to-seed spread is a column, so a reader sees the noise floor.
"""

from __future__ import annotations

import pandas as pd

from reports.stats import METHOD_SEEDS, t_interval
from reports.tables import Tables, codec_seconds, step_seconds

# the settings a summary row is keyed by (beyond compressor and rate) where the tables have them
# and they vary; a gap pairs each run with the baseline of the same seed and the same settings
# (model size and steps included) but boundary semantics, which the baseline has none of
SETTINGS = ("d_model", "ctx", "steps_run", "variant", "boundary_grad", "grad_clip", "norm_eps")


def _keys(t: pd.DataFrame) -> list[str]:
    return ["compressor", "rate"] + [c for c in SETTINGS if c in t.columns and t[c].map(_label).nunique() > 1]


def _label(v: object) -> str:
    """A setting's value as a comparable label (None and NaN alike: 'none')."""
    return "none" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)


def convergence_summary(tables: Tables) -> pd.DataFrame:
    """One row per configuration of the twin training trials: held-out loss and gap (vs the
    baseline with the same seed and settings), mean and 95% interval over seeds."""
    t = tables.ok
    if t.empty or "eval_loss" not in t.columns:
        return pd.DataFrame()
    t = t[(t["mode"] == "train") & t["eval_loss"].notna()].copy()
    if t.empty:
        return pd.DataFrame()
    keys = _keys(t)
    settings = [k for k in keys if k not in ("compressor", "rate")]
    # the baseline ignores boundary semantics (no compressor): pair on the other settings
    pair_on = [k for k in settings if k not in ("variant", "boundary_grad")]
    base = t[t["compressor"] == "none"]
    rows = []
    for key, g in t.groupby([t[k].map(_label) if k in settings else t[k] for k in keys], dropna=False, sort=False):
        key = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        gaps = []
        for _, r in g.iterrows():
            b = base[base["seed"] == r["seed"]]
            for k in pair_on:
                b = b[b[k].map(_label) == _label(r[k])]
            if not b.empty:
                b_eval, b_init = b["eval_loss"].mean(), b["initial_loss"].mean()
                gaps.append((r["eval_loss"] - b_eval) / (b_init - b_eval))
        ev, gp = t_interval(list(g["eval_loss"])), t_interval(gaps)
        rows.append(
            {
                **key,
                "seeds": ev.n,
                "eval_loss": ev.mean,
                "eval_lo": ev.lo,
                "eval_hi": ev.hi,
                "eval_std": ev.std,
                "gap": gp.mean,
                "gap_lo": gp.lo,
                "gap_hi": gp.hi,
            }
        )
    out = pd.DataFrame(rows)
    return out.sort_values(keys, key=_sort_key, ignore_index=True)


def _sort_key(col: pd.Series) -> pd.Series:
    """Numbers as numbers (d=64 before d=128), labels as text."""
    num = pd.to_numeric(col, errors="coerce")
    return num if num.notna().sum() == col.notna().sum() and col.notna().any() else col.astype(str)


def throughput_summary(tables: Tables) -> pd.DataFrame:
    """Distributed trials: tokens/s and seconds per step (mean and 95% interval over steps)."""
    t = tables.ok
    if t.empty or "execution" not in t.columns:
        return pd.DataFrame()
    d = t[t["execution"] == "distributed"]
    rows = []
    for _, r in d.iterrows():
        secs = t_interval(step_seconds(tables, r["trial_id"]))
        codec = codec_seconds(tables, r["trial_id"])
        rows.append(
            {
                "compressor": r["compressor"],
                "rate": r["rate"],
                "mode": r["mode"],
                "runtime": r.get("runtime", "pipenem"),
                "device": r.get("device"),
                "topology": r.get("topology"),
                "tokens_per_s": r["tokens_per_s"],
                "steps": secs.n,
                "step_s": secs.mean,
                "step_lo": secs.lo,
                "step_hi": secs.hi,
                # how much of a step the busiest stage spent encoding/decoding (real or modeled: `codec`)
                "codec": r.get("codec", "real"),
                "codec_s": codec,
                "codec_share": codec / secs.mean if codec is not None and secs.mean else None,
                "link_wire_fwd": r.get("fwd_link_wire_ratio"),
                "link_wire_bwd": r.get("bwd_link_wire_ratio"),
            }
        )
    return pd.DataFrame(rows)


def fmt_interval(mean: float, lo: float, hi: float, spec: str = ".3f") -> str:
    if pd.isna(lo) or pd.isna(hi):
        return f"{mean:{spec}}"
    return f"{mean:{spec}} [{lo:{spec}}, {hi:{spec}}]"


CONVERGENCE_NOTE = (
    f"Held-out loss and gap: {METHOD_SEEDS}; gap = the fraction of the same-seed baseline's loss drop a "
    "compressor loses. The baseline's row shows the seed-to-seed spread (std) every other row is read against."
)
