"""Reading the result tables (the only input of reports/)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from basics.errors import ConfigError


@dataclass
class Tables:
    trials: pd.DataFrame
    steps: pd.DataFrame
    links: pd.DataFrame
    fidelity: pd.DataFrame
    root: Path | None = None  # where the per-trial timeline tables are (spans/, link_load/)

    def timeline(self, table: str, trial_id: str) -> pd.DataFrame:
        """One trial's ``spans`` or ``link_load`` rows (empty when it has none: twin trials)."""
        return read_table(self.root / table / f"{trial_id}.parquet") if self.root else pd.DataFrame()

    @property
    def ok(self) -> pd.DataFrame:
        t = self.trials
        return t[t["status"] == "ok"] if not t.empty else t


def load(root: str | Path) -> Tables:
    root = Path(root)

    def read(name: str) -> pd.DataFrame:
        return read_table(root / f"{name}.parquet")

    return Tables(read("trials"), read("steps"), read("links"), read("fidelity"), root)


def read_table(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """One result table (empty if absent); ConfigError naming it if it is not a readable table."""
    if not path.exists():
        return pd.DataFrame()
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as exc:  # pyarrow's ArrowInvalid and friends: a damaged or foreign file
        raise ConfigError(
            "DIR", f"{path} is not a readable Parquet table ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def provenance(trials: pd.DataFrame) -> str:
    """How the numbers were obtained, for captions: backend, compute, seeds, topology, shaper, malloc."""
    if trials.empty:
        return "no trials"
    parts = []
    for col, name in (
        ("execution", "execution"),
        ("runtime", "runtime"),
        ("backend", "backend"),
        ("compute", "compute"),
        ("device", "device"),
        ("dtype", "dtype"),
        ("codec", "codec time"),
        ("shaper", "shaper"),
        ("topology", "topology"),
        ("seed", "seed"),
        ("allocator", "malloc"),
    ):
        if col in trials.columns:
            vals = sorted({str(v) for v in trials[col].dropna()})
            if vals:
                parts.append(f"{name}: {', '.join(vals)}")
    return "; ".join(parts)


def wire_ratios(trials: pd.DataFrame) -> tuple[float, float | None]:
    """(forward, backward) wire ratio: dense bytes / bytes the links carried (frames, headers,
    indices and control messages included) where the trials ran over links; the payload
    ratio on seeded noise otherwise (older tables, twins)."""

    def pick(direction: str) -> float | None:
        for col in (f"{direction}_link_wire_ratio", f"{direction}_wire_ratio"):
            if col in trials.columns and trials[col].notna().any():
                return float(trials[col].mean())
        return None

    return pick("fwd") or math.nan, pick("bwd")


def gain_bound(fwd_ratio: float, bwd_ratio: float | None) -> float:
    """The largest gain bandwidth-bound links allow. Inference (``bwd_ratio`` None) sends only
    activations: the forward wire ratio. Training sends activations and their gradients, equal
    in dense size, and a GPipe step runs all forwards, then all backwards, so each link's two
    directions are busy one after the other: the link time is their sum, and the bound is
    2 / (1/fwd + 1/bwd) — the wire ratio when both directions are compressed alike,
    2 / (1 + 1/fwd) ≈ 1.82× with dense gradients at 90%."""
    if bwd_ratio is None:
        return fwd_ratio
    return 2.0 / (1.0 / fwd_ratio + 1.0 / bwd_ratio)


def wire_bound(trials: pd.DataFrame, mode: str) -> float:
    """:func:`gain_bound` for these trials' measured wire ratios."""
    fwd, bwd = wire_ratios(trials)
    return gain_bound(fwd, None if mode == "infer" or bwd is None else bwd)


def step_seconds(tables: Tables, trial_id: str, skip: int = 1) -> list[float]:
    """Seconds of each step of a distributed trial after ``skip`` warm-up steps: a step ends
    when its last stage finishes and starts when the previous step ended, as the trial's
    tokens_per_s is measured (its tokens ÷ the sum of these)."""
    s = tables.steps
    if s.empty:  # trials whose steps table is missing (copied without it)
        return []
    s = s[s["trial_id"] == trial_id]
    if s.empty:
        return []
    per = s.groupby("step").agg(end=("end", "max"), start=("start", "min")).sort_index()
    dur = per["end"] - per["end"].shift(1).fillna(per["start"])
    return [float(d) for d in dur.iloc[skip:]] if len(dur) > skip else [float(d) for d in dur]


def codec_seconds(tables: Tables, trial_id: str, skip: int = 1) -> float | None:
    """Encode + decode seconds per step of the stage that spends the most on them (after ``skip``
    warm-up steps): measured on this host's CPU, or modeled (the trial's ``codec`` column says which)."""
    s = tables.steps
    if s.empty or "encode_s" not in s.columns:
        return None
    s = s[(s["trial_id"] == trial_id) & (s["step"] >= skip)]
    if s.empty:
        return None
    return float((s["encode_s"] + s["decode_s"]).groupby(s["stage"]).mean().max())


def smoothed_loss(curves: pd.DataFrame, window: int = 5) -> pd.Series:
    """Mean loss per step over the given rows, as a moving average (what the plots draw)."""
    return curves.groupby("step")["loss"].mean().rolling(window, min_periods=1).mean()


def loss_curves(tables: Tables) -> pd.DataFrame:
    """Loss per step of every ok train trial (the last stage's rows for distributed runs)."""
    s, t = tables.steps, tables.ok
    if s.empty or t.empty:
        return pd.DataFrame()
    s = s[s["loss"].notna()]
    if "stage" in s.columns:
        last = s.groupby("trial_id")["stage"].transform("max")
        s = s[s["stage"] == last]
    cols = ["trial_id", "compressor", "rate", "mode", "execution", "compute", "seed", "suite", "d_model", "ctx"]
    return s.merge(t[[c for c in cols if c in t.columns]], on="trial_id")
