"""The results store: Parquet tables ``trials``, ``steps``, ``links`` (+ ``fidelity``) in one folder.

A sweep appends trial by trial: each append rewrites a table to a temporary file and
renames it into place, so a reader (or an interrupted sweep) only ever sees whole
tables, and the trial row is written last — a trial is "finished" once its row exists.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.results.atomic import atomic_write

TABLES = ("trials", "steps", "links", "fidelity")


class ResultStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, table: str) -> Path:
        return self.root / f"{table}.parquet"

    def read(self, table: str) -> pd.DataFrame:
        p = self.path(table)
        return pd.read_parquet(p) if p.exists() else pd.DataFrame()

    def append(self, table: str, rows: list[dict]) -> None:
        if not rows:
            return
        new = pd.DataFrame(rows)
        old = self.read(table)
        if not old.empty and "trial_id" in new.columns and "trial_id" in old.columns:
            old = old[~old["trial_id"].isin(set(new["trial_id"]))]  # a re-run replaces, never duplicates
        df = pd.concat([old, new], ignore_index=True) if not old.empty else new
        atomic_write(self.path(table), lambda tmp: df.to_parquet(tmp, index=False))

    def finished(self) -> set[str]:
        t = self.read("trials")
        return set(t["trial_id"]) if not t.empty else set()

    def record_trial(self, trial_row: dict, steps: list[dict], links: list[dict]) -> None:
        """Steps and links first, the trial row last: its presence marks the trial finished."""
        self.append("steps", steps)
        self.append("links", links)
        self.append("trials", [trial_row])


def time_to_target(steps: list[dict], target: float | None) -> float | None:
    """Seconds from the first step's start to the end of the first step whose loss ≤ target."""
    if target is None or not steps:
        return None
    t0 = min(s["start"] for s in steps)
    for s in sorted(steps, key=lambda s: s["step"]):
        if s.get("loss") is not None and s["loss"] <= target:
            return s["end"] - t0
    return None
