"""Reading the result tables (the only input of reports/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Tables:
    trials: pd.DataFrame
    steps: pd.DataFrame
    links: pd.DataFrame
    fidelity: pd.DataFrame

    @property
    def ok(self) -> pd.DataFrame:
        t = self.trials
        return t[t["status"] == "ok"] if not t.empty else t


def load(root: str | Path) -> Tables:
    root = Path(root)

    def read(name: str) -> pd.DataFrame:
        p = root / f"{name}.parquet"
        return pd.read_parquet(p) if p.exists() else pd.DataFrame()

    return Tables(read("trials"), read("steps"), read("links"), read("fidelity"))


def provenance(trials: pd.DataFrame) -> str:
    """How the numbers were obtained, for captions: backend, compute, seeds, topology, shaper, malloc."""
    if trials.empty:
        return "no trials"
    parts = []
    for col, name in (("execution", "execution"), ("backend", "backend"), ("compute", "compute"), ("device", "device"),
                      ("shaper", "shaper"), ("topology", "topology"), ("seed", "seed"),
                      ("allocator", "malloc")):
        if col in trials.columns:
            vals = sorted({str(v) for v in trials[col].dropna()})
            if vals:
                parts.append(f"{name}: {', '.join(vals)}")
    return "; ".join(parts)


def wire_bound(trials: pd.DataFrame, mode: str) -> float:
    """The gain a bandwidth-bound pipeline can reach: the wire ratio of what crosses the links
    (forward only for inference; the smaller of forward and backward for training)."""
    fwd = float(trials["fwd_wire_ratio"].mean())
    return fwd if mode == "infer" else min(fwd, float(trials["bwd_wire_ratio"].mean()))


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
    cols = ["trial_id", "compressor", "rate", "mode", "execution", "compute", "seed", "suite"]
    return s.merge(t[[c for c in cols if c in t.columns]], on="trial_id")
