"""A run's timeline as a Chrome / Perfetto trace (the JSON Trace Event Format).

Opens in ui.perfetto.dev and chrome://tracing. One process per stage, with a track for
compute (forward, backward, optimizer), one for the codec (encode, decode), one for waits
(a payload, the gradient-norm sum) and asynchronous tracks for sends and arrivals (several
messages can be in flight at once, so they overlap). One process holds the links: a counter
per link and direction, the achieved Mbit/s between two samples of its interface counter
against the planned Mbit/s. Times are microseconds from the first span shown, on the
stages' shared CLOCK_MONOTONIC; ``otherData`` carries the schedule and the trial's settings.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

TRACKS = {"fwd": 1, "bwd": 1, "optim": 1, "encode": 2, "decode": 2, "recv": 3, "norm": 3}
TRACK_NAMES = {1: "compute", 2: "codec", 3: "wait"}
ASYNC = ("send", "arrive")  # overlapping spans: async events, one track per kind and direction
LINKS_PID = 1000
NAMES = {"fwd": "F", "bwd": "B", "encode": "enc", "decode": "dec", "recv": "wait", "send": "send", "arrive": "arrive"}


def _label(kind: str, micro: Any, direction: Any) -> str:
    name = NAMES.get(kind, kind)
    if pd.notna(micro):
        name += f"{int(micro)}"
    if pd.notna(direction) and kind not in ("fwd", "bwd"):
        name += " " + ("fwd" if direction == "forward" else "bwd")
    return name


def select_steps(spans: pd.DataFrame, steps: tuple[int, int] | None) -> pd.DataFrame:
    """The spans of steps A ≤ step < B (all without a range)."""
    if steps is None or spans.empty:
        return spans
    a, b = steps
    return spans[(spans["step"] >= a) & (spans["step"] < b)]


def chrome_trace(spans: pd.DataFrame, load: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any]:
    """The trace of ``spans`` (stage, kind, step, micro, direction, t0, t1) and the link samples
    (t, link, direction, tx_bytes, planned_bps) that fall within them."""
    if spans.empty:
        raise ValueError("no spans to trace (a twin trial, or steps outside the run)")
    origin = float(spans["t0"].min())
    end = float(spans["t1"].max())

    def us(t: float) -> float:
        return round((t - origin) * 1e6, 3)

    events: list[dict] = []
    for stage in sorted(spans["stage"].unique()):
        stage = int(stage)
        events.append({"ph": "M", "name": "process_name", "pid": stage, "tid": 0, "args": {"name": f"stage {stage}"}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": stage, "tid": 0, "args": {"sort_index": stage}})
        for tid, name in TRACK_NAMES.items():
            events.append({"ph": "M", "name": "thread_name", "pid": stage, "tid": tid, "args": {"name": name}})
    for n, r in enumerate(spans.sort_values("t0").itertuples(index=False)):
        args = {"step": int(r.step)}
        if pd.notna(r.micro):
            args["micro_batch"] = int(r.micro)
        if pd.notna(r.direction):
            args["direction"] = r.direction
        name = _label(r.kind, r.micro, r.direction)
        if r.kind in ASYNC:
            cat = f"{r.kind} {r.direction}"
            base = {"name": name, "cat": cat, "pid": int(r.stage), "tid": 0, "id": n, "args": args}
            events.append({**base, "ph": "b", "ts": us(r.t0)})
            events.append({**base, "ph": "e", "ts": us(r.t1)})
        else:
            events.append(
                {
                    "ph": "X",
                    "name": name,
                    "cat": r.kind,
                    "pid": int(r.stage),
                    "tid": TRACKS.get(r.kind, 3),
                    "ts": us(r.t0),
                    "dur": round((r.t1 - r.t0) * 1e6, 3),
                    "args": args,
                }
            )
    if not load.empty:
        events.append({"ph": "M", "name": "process_name", "pid": LINKS_PID, "tid": 0, "args": {"name": "links"}})
        window = load[(load["t"] >= origin) & (load["t"] <= end)]
        for (link, direction), g in window.groupby(["link", "direction"], sort=True):
            g = g.sort_values("t")
            t, tx, planned = g["t"].to_numpy(), g["tx_bytes"].to_numpy(), g["planned_bps"].to_numpy()
            for i in range(1, len(g)):
                dt = t[i] - t[i - 1]
                if dt <= 0:
                    continue
                events.append(
                    {
                        "ph": "C",
                        "name": f"link {link} {direction}",
                        "pid": LINKS_PID,
                        "tid": 0,
                        "ts": us(t[i - 1]),
                        "args": {
                            "Mbit/s": round((tx[i] - tx[i - 1]) * 8 / dt / 1e6, 3),
                            "planned Mbit/s": round(planned[i - 1] / 1e6, 3),
                        },
                    }
                )
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {k: str(v) for k, v in meta.items()}}
