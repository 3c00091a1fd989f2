"""Verdict rules and the report, from hand-made result tables (reports read only tables)."""

from __future__ import annotations

import base64
from pathlib import Path

import pandas as pd

from harness.results import ResultStore
from reports.cli import build_report
from reports.tables import load
from reports.verdicts import INFER_GAIN, TRAIN_GAIN, verdicts


def _trial(tid: str, comp: str, rate, mode: str, execution: str, **kw) -> dict:  # noqa: ANN001
    row = {"trial_id": tid, "suite": "s", "compressor": comp, "rate": rate, "mode": mode, "execution": execution,
           "compute": "modeled" if execution == "distributed" else "real", "backend": "netns", "seed": 0, "status": "ok",
           "topology": "ci-4stage", "shaper": "tbf", "fwd_wire_ratio": 1.0, "bwd_wire_ratio": 1.0, "tokens_per_s": 100.0,
           "eval_loss": None, "initial_loss": None, "final_loss": None, "device": "a10g", "error": None}
    row.update(kw)
    return row


def _store(tmp_path: Path, rows: list[dict]) -> Path:
    store = ResultStore(tmp_path / "res")
    steps = [{"trial_id": r["trial_id"], "step": s, "loss": 5.0 - s * 0.1, "tokens": 100, "start": float(s), "end": s + 1.0,
              "stage": -1} for r in rows for s in range(10)]
    store.append("steps", steps)
    store.append("trials", rows)
    return store.root


def test_throughput_claims_against_the_wire_ratio_bound(tmp_path: Path) -> None:
    rows = [_trial("a", "none", None, "train", "distributed", tokens_per_s=100.0),
            _trial("b", "column-fwd+bwd", 0.9, "train", "distributed", tokens_per_s=250.0, fwd_wire_ratio=9.8, bwd_wire_ratio=9.8),
            _trial("c", "none", None, "infer", "distributed", tokens_per_s=100.0),
            _trial("d", "column-fwd+bwd", 0.9, "infer", "distributed", tokens_per_s=700.0, fwd_wire_ratio=9.8)]
    vs = {v.claim: v for v in verdicts(load(_store(tmp_path, rows)))}
    assert vs[TRAIN_GAIN].verdict == "reproduced" and vs[TRAIN_GAIN].value == 2.5
    assert vs[INFER_GAIN].verdict == "exceeds bound — cannot hold" and vs[INFER_GAIN].bound_value == 9.8


def test_training_gain_below_claim_is_not_reproduced(tmp_path: Path) -> None:
    rows = [_trial("a", "none", None, "train", "distributed", tokens_per_s=100.0),
            _trial("b", "column-fwd+bwd", 0.9, "train", "distributed", tokens_per_s=120.0, fwd_wire_ratio=9.8, bwd_wire_ratio=9.8)]
    vs = {v.claim: v for v in verdicts(load(_store(tmp_path, rows)))}
    assert vs[TRAIN_GAIN].verdict == "not reproduced"


def test_convergence_claims_use_the_gap_rule(tmp_path: Path) -> None:
    conv = [("none", None, 3.0), ("column-fwd+bwd", 0.9, 3.05), ("topk-fwd+bwd", 0.1, 3.5), ("topk-fwd", 0.9, 3.02),
            ("row-fwd+bwd", 0.9, 3.6), ("topk-fwd+bwd", 0.9, 4.0), ("column-fwd+bwd", 0.1, 3.01)]
    rows = [_trial(f"t{i}", c, r, "train", "twin", eval_loss=e, initial_loss=5.0) for i, (c, r, e) in enumerate(conv)]
    vs = {v.claim: v for v in verdicts(load(_store(tmp_path, rows)))}
    assert vs["column fwd+bwd at 90% matches the baseline"].verdict == "reproduced"  # gap 0.025
    assert vs["TopK fwd+bwd degrades even at 10%"].verdict == "reproduced"  # gap 0.25
    assert vs["TopK fwd-only keeps convergence at 90%"].verdict == "reproduced"  # gap 0.01
    assert vs["row masking at 90% degrades (vs column)"].verdict == "reproduced"
    assert vs["column beats TopK (fwd+bwd) at every rate"].verdict == "reproduced"


def test_report_html_is_self_contained_with_captions(tmp_path: Path) -> None:
    rows = [_trial("a", "none", None, "train", "twin", eval_loss=3.0, initial_loss=5.0),
            _trial("b", "column-fwd+bwd", 0.5, "train", "twin", eval_loss=3.1, initial_loss=5.0)]
    root = _store(tmp_path, rows)
    path, vs = build_report(root)
    text = path.read_text()
    assert "data:image/png;base64," in text and "<img src='http" not in text
    png = text.split("data:image/png;base64,")[1].split("'")[0]
    assert base64.b64decode(png)[:4] == b"\x89PNG"
    assert "execution: twin" in text and "seed: 0" in text  # captions say how numbers were obtained
    assert (root / "loss_by_rate.png").exists() and (root / "trials.csv").exists()
    assert pd.read_csv(root / "verdicts.csv").shape[0] == len(vs)
