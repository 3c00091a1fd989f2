"""Timelines (issue 24): stage spans, link load, `pipenem trace`, bubble and link-utilisation
figures, the report's Gantt pictures, and progress lines in a log."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.results.timeline import bubble, ideal_bubble, trial_figures, utilisation
from testbed.linkload import MAX_ROWS_PER_S, sampling_hz
from tests.conftest import ROOT, needs_netns, pipenem

# ---------------------------------------------------------------- the figures, on synthetic timelines


def _gpipe(p: int, m: int, tf: float, tb: float, step: int, t0: float = 0.0) -> list[dict]:
    """A perfect GPipe step with equal stages and free links."""
    rows = []
    for s in range(p):
        for k in range(m):
            a = t0 + (s + k) * tf
            rows.append({"stage": s, "kind": "fwd", "step": step, "micro": k, "direction": None, "t0": a, "t1": a + tf})
    end_fwd = t0 + (m + p - 1) * tf
    for s in range(p):
        for j, k in enumerate(reversed(range(m))):
            a = end_fwd + (p - 1 - s + j) * tb
            rows.append({"stage": s, "kind": "bwd", "step": step, "micro": k, "direction": None, "t0": a, "t1": a + tb})
    return rows


def test_link_load_keeps_25_hz_on_small_topologies_and_bounds_its_rows_on_large_ones() -> None:
    assert sampling_hz(25.0, 14) == 25.0 and sampling_hz(25.0, 80) == 25.0  # 8 and 41 stages
    for channels in (81, 254, 510, 766):  # up to 384 stages
        hz = sampling_hz(25.0, channels)
        assert hz < 25.0 and channels * hz == pytest.approx(MAX_ROWS_PER_S)
    assert sampling_hz(25.0, 10**6) == 1.0  # never slower than once a second


def test_a_perfect_gpipe_step_has_the_ideal_bubble() -> None:
    p, m = 4, 4
    spans = _gpipe(p, m, 1.0, 2.0, 0) + _gpipe(p, m, 1.0, 2.0, 1, t0=100.0) + _gpipe(p, m, 1.0, 2.0, 2, t0=200.0)
    per_stage = bubble(spans, p)
    assert sorted(per_stage) == [0, 1, 2, 3]
    for v in per_stage.values():
        assert v == pytest.approx(ideal_bubble(p, m))  # 3/7
    assert ideal_bubble(p, m) == pytest.approx(3 / 7)


def test_waits_begun_in_the_step_before_do_not_stretch_a_step() -> None:
    spans = _gpipe(2, 2, 1.0, 1.0, 0) + _gpipe(2, 2, 1.0, 1.0, 1, t0=10.0)
    spans.append({"stage": 1, "kind": "recv", "step": 1, "micro": 0, "direction": "forward", "t0": 5.0, "t1": 11.0})
    assert bubble(spans, 2)[1] == pytest.approx(ideal_bubble(2, 2))


def test_utilisation_counts_the_wire_against_the_plan_while_data_waits() -> None:
    # stage 0 sends one message a step on link 0-1 at 1 Mbit/s planned; it takes 1 s to cross
    spans, load = [], []
    for step in range(3):
        t = 10.0 * step
        msg = {"step": step, "micro": 0, "direction": "forward"}
        spans.append({"stage": 0, "kind": "send", **msg, "t0": t, "t1": t + 0.2})
        spans.append({"stage": 1, "kind": "arrive", **msg, "t0": t + 0.1, "t1": t + 1})
    sent = 0.0
    for i in range(0, 301):
        t = i * 0.1
        in_msg = ((t - 0.05) % 10.0) < 1.0  # the 0.1 s before this sample lies within a message
        sent += 0.9e6 / 8 * 0.1 if in_msg and i else 0.0  # 90% of the planned rate while a message crosses
        load.append({"t": t, "link": "0-1", "direction": "forward", "tx_bytes": sent, "planned_bps": 1e6})
    u = utilisation(spans, load, "0-1", "forward")
    assert u == pytest.approx(0.9, abs=0.03)
    figs = trial_figures(spans, load, 2, 1, "infer")
    assert figs["slow_link"] == "0-1" and figs["slow_link_util_bwd"] is None


# ---------------------------------------------------------------- real runs over real links

FAST4 = {"name": "fast4", "stages": 4, "defaults": {"bandwidth": "10Gbit"}}


@needs_netns
@pytest.mark.netns
@pytest.mark.slow
def test_gpipe_bubble_of_a_compute_bound_equal_stage_run_is_near_the_ideal(tmp_path: Path) -> None:
    """Modeled compute (60 ms forward per micro-batch and stage, 120 ms backward) over 10 Gbit
    links: communication is ~1% of compute, so GPipe's measured bubble must be its ideal."""
    (tmp_path / "fast4.yaml").write_text(yaml.safe_dump(FAST4))
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump({"name": "slow", "flops_per_s": 1.0e9}))
    cfg = {
        "topology": str(tmp_path / "fast4.yaml"),
        "model": {"d_model": 64, "n_layers": 16, "n_heads": 4, "ctx": 64},
        "data": {"dataset": "synthetic"},
        "train": {"steps": 5, "batch": 8, "micro_batches": 4, "schedule": "gpipe"},
        "compute": {"mode": "modeled", "profile": str(tmp_path / "slow.yaml")},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    r = pipenem("train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out"), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    ideal = ideal_bubble(4, 4)
    assert s["bubble_ideal"] == pytest.approx(ideal)
    assert abs(s["bubble_fraction"] - ideal) / ideal <= 0.15, s["bubble_by_stage"]


@needs_netns
@pytest.mark.netns
@pytest.mark.slow
def test_trace_of_a_training_run_on_the_ci_topology_is_a_valid_chrome_trace(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = pipenem("train", "ci-train", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bubble" in r.stdout and f"pipenem trace {out}" in " ".join(r.stdout.split())
    # links sampled at >= 20 Hz per link and direction
    load = pd.DataFrame(json.loads((out / "link_load.json").read_text()))
    assert set(load["link"]) == {"0-1", "1-2", "2-3"} and set(load["direction"]) == {"forward", "backward"}
    g = load[(load["link"] == "1-2") & (load["direction"] == "forward")]
    assert len(g) / (g["t"].max() - g["t"].min()) >= 20
    assert g["tx_bytes"].is_monotonic_increasing and g["tx_bytes"].iloc[-1] > g["tx_bytes"].iloc[0]
    r = pipenem("trace", str(out), "--steps", "2:4", "--out", str(tmp_path / "t.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "t.json").read_text())
    events = doc["traceEvents"]
    assert isinstance(events, list) and events
    for e in events:
        assert {"ph", "pid", "tid", "name"} <= set(e), e
        assert e["ph"] in ("X", "M", "C", "b", "e"), e
        if e["ph"] != "M":
            assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        if e["ph"] == "X":
            assert e["dur"] >= 0 and "step" in e["args"], e
            assert e["args"]["step"] in (2, 3)
        if e["ph"] == "C":
            assert set(e["args"]) == {"Mbit/s", "planned Mbit/s"}, e
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {"stage 0", "stage 1", "stage 2", "stage 3", "links"}
    kinds = {e["cat"] for e in events if e["ph"] == "X"}
    assert {"fwd", "bwd", "encode", "decode", "recv", "optim"} <= kinds
    sends = {e["cat"] for e in events if e["ph"] == "b"}
    assert {"send forward", "send backward", "arrive forward", "arrive backward"} <= sends
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert "link 1-2 forward" in counters and "link 0-1 backward" in counters
    # GPipe's order is in the trace: stage 0 runs its four forwards before any backward
    st0 = sorted((e["ts"], e["cat"]) for e in events if e["ph"] == "X" and e["pid"] == 0 and e["args"]["step"] == 2)
    order = [c for _, c in st0 if c in ("fwd", "bwd")]
    assert order == ["fwd"] * 4 + ["bwd"] * 4
    assert doc["otherData"]["schedule"] == "gpipe" and doc["otherData"]["steps"] == "2:4"
    r = pipenem("trace", str(out), "--steps", "9:3")
    assert r.returncode == 2 and "--steps" in r.stdout + r.stderr


COMM = {
    "name": "comm",
    "topology": str(ROOT / "topologies" / "ci-4stage.yaml"),
    "base": {
        "model": {"d_model": 512, "n_layers": 4, "n_heads": 16, "ctx": 1024},
        "train": {"steps": 4, "batch": 8, "micro_batches": 4},
        "compute": {"profile": "a10g"},
    },
    "axes": {
        "compressor": [{"label": "none"}, {"label": "column", "fwd": "column", "bwd": "column"}],
        "rate": [0.9],
        "compute": ["modeled"],
        "execution": ["distributed"],
    },
}


NO_COLUMNS = {k: v for k, v in os.environ.items() if k != "COLUMNS"}


@needs_netns
@pytest.mark.netns
@pytest.mark.slow
def test_a_comm_bound_suite_in_a_log_records_timelines_and_prints_plain_lines(tmp_path: Path) -> None:
    suite = tmp_path / "comm.yaml"
    suite.write_text(yaml.safe_dump(COMM))
    res = tmp_path / "res"
    log = tmp_path / "log.txt"
    with log.open("w") as f:  # stdout to a file: no terminal
        r = subprocess.run(
            [sys.executable, "-m", "pipenem.main", "run", str(suite), "--out", str(res)],
            stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, timeout=600, env=NO_COLUMNS,
        )  # fmt: skip
    text = log.read_text()
    assert r.returncode == 0, text
    lines = text.splitlines()
    starts = [ln for ln in lines if re.search(r"comm \[\d/2\] start ", ln)]
    ends = [ln for ln in lines if re.search(r"comm \[\d/2\] ok ", ln)]
    assert len(starts) == 2 and len(ends) == 2, text
    for ln in ends:
        assert "tok/s" in ln and "took " in ln and "ETA " in ln and "elapsed " in ln, ln
    assert "━" not in text  # no live widget in a log
    t = pd.read_parquet(res / "trials.parquet").set_index("compressor")
    # the 80 Mbit link is busy while the forward activations wait to cross it
    assert t.loc["none", "slow_link"] == "1-2"
    assert t.loc["none", "slow_link_util_fwd"] >= 0.9, t.loc["none"].to_dict()
    assert t.loc["none", "bubble_ideal"] == pytest.approx(3 / 7)
    assert 0 < t.loc["none", "bubble_fraction"] <= 1
    # column 0.9 sends ~10x fewer bytes per token than the baseline
    ratio = t.loc["none", "wire_bytes_per_token"] / t.loc["column", "wire_bytes_per_token"]
    assert 5 < ratio < 12, ratio
    for tid in t["trial_id"]:
        spans = pd.read_parquet(res / "spans" / f"{tid}.parquet")
        assert set(spans["stage"]) == {0, 1, 2, 3} and (spans["t1"] >= spans["t0"]).all()
        assert not pd.read_parquet(res / "link_load" / f"{tid}.parquet").empty
    r = pipenem("report", str(res))
    assert r.returncode == 0, r.stdout + r.stderr
    for tid in t["trial_id"]:
        assert (res / f"gantt_{tid}.png").exists()
    html = (res / "report.html").read_text()
    assert html.count("alt='gantt_") == 2 and "alt='bytes_per_link_ci-4stage'" in html
    r = pipenem("trace", str(res))
    assert r.returncode == 2 and "name one" in r.stdout + r.stderr  # two trials: which?
    tid = t.loc["column", "trial_id"]
    r = pipenem("trace", str(res), "--trial", tid, "--out", str(tmp_path / "c.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((tmp_path / "c.json").read_text())["otherData"]["trial_id"] == tid
