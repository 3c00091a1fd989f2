"""The results store: Parquet tables ``trials``, ``steps``, ``links`` (+ ``fidelity``) in one folder,
and per trial the timeline tables ``spans/<trial_id>.parquet`` and ``link_load/<trial_id>.parquet``
(tens of thousands of rows a trial: one file each, so a sweep never rewrites them all).

A sweep appends trial by trial: each append rewrites a table to a temporary file and
renames it into place, so a reader (or an interrupted sweep) only ever sees whole
tables, and the trial row is written last — a trial is "finished" once its row exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from basics.errors import ConfigError
from harness.results.atomic import atomic_write

TABLES = ("trials", "steps", "links", "fidelity")
PER_TRIAL = ("spans", "link_load")


class ResultStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, table: str, trial_id: str | None = None) -> Path:
        return self.root / table / f"{trial_id}.parquet" if trial_id else self.root / f"{table}.parquet"

    def read_trial(self, table: str, trial_id: str) -> pd.DataFrame:
        """One trial's rows of a per-trial table (``spans``, ``link_load``); empty if it has none."""
        p = self.path(table, trial_id)
        return pd.read_parquet(p) if p.exists() else pd.DataFrame()

    def read(self, table: str) -> pd.DataFrame:
        p = self.path(table)
        if not p.exists():
            return pd.DataFrame()
        try:
            return pd.read_parquet(p)
        except Exception as exc:  # pyarrow's ArrowInvalid, OSError: not a table this store wrote
            raise ConfigError(
                "--out",
                f"{p} is not a readable Parquet table ({type(exc).__name__}: {str(exc)[:200]}); move it away "
                "or choose another folder",
            ) from None

    def _merged(self, table: str, rows: list[dict]) -> pd.DataFrame:
        new = pd.DataFrame(rows)
        old = self.read(table)
        if not old.empty and "trial_id" in new.columns and "trial_id" in old.columns:
            old = old[~old["trial_id"].isin(set(new["trial_id"]))]  # a re-run replaces, never duplicates
        return pd.concat([old, new], ignore_index=True) if not old.empty else new

    def append(self, table: str, rows: list[dict]) -> None:
        if rows:
            df = self._merged(table, rows)
            atomic_write(self.path(table), lambda tmp: df.to_parquet(tmp, index=False))

    def finished(self) -> set[str]:
        t = self.read("trials")
        return set(t["trial_id"]) if not t.empty else set()

    def record_trial(
        self, trial_row: dict, steps: list[dict], links: list[dict], per_trial: dict[str, list[dict]] | None = None
    ) -> None:
        """All of a trial's rows or none: every table is written to a temporary file first (a full
        disk fails there, leaving the old tables), then renamed into place, the trial row last —
        its presence marks the trial finished. ``per_trial``: rows of the per-trial tables."""
        tid, per_trial = trial_row["trial_id"], per_trial or {}
        staged = [(self.path(t, tid), pd.DataFrame(rows)) for t, rows in per_trial.items() if rows]
        for t in PER_TRIAL:
            if not per_trial.get(t):
                self.path(t, tid).unlink(missing_ok=True)  # a re-run without a timeline leaves no stale one
        staged += [(self.path(t), self._merged(t, rows)) for t, rows in (("steps", steps), ("links", links)) if rows]
        staged.append((self.path("trials"), self._merged("trials", [trial_row])))
        written: list[Path] = []
        try:
            for path, df in staged:
                path.parent.mkdir(exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                written.append(tmp)
                df.to_parquet(tmp, index=False)
        except BaseException as exc:
            for tmp in written:
                tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.filename is None:
                exc.filename = str(written[-1]).removesuffix(".tmp")  # pyarrow's I/O errors do not say which file
            raise
        for (path, _), tmp in zip(staged, written, strict=True):
            os.replace(tmp, path)


def time_to_target(steps: list[dict], target: float | None) -> float | None:
    """Seconds from the first step's start to the end of the first step whose loss ≤ target."""
    if target is None or not steps:
        return None
    t0 = min(s["start"] for s in steps)
    for s in sorted(steps, key=lambda s: s["step"]):
        if s.get("loss") is not None and s["loss"] <= target:
            return s["end"] - t0
    return None
