"""Verdict rules and the report, from hand-made result tables (reports read only tables)."""

from __future__ import annotations

import base64
from pathlib import Path

import pandas as pd
import pytest

from harness.results.store import ResultStore
from papers.beyond_topk.claims import INFER_GAIN, TRAIN_GAIN, verdicts
from reports.console import build_report
from reports.tables import load
from tests.conftest import pipenem


def _trial(tid: str, comp: str, rate, mode: str, execution: str, **kw) -> dict:
    row = {
        "trial_id": tid,
        "suite": "s",
        "compressor": comp,
        "rate": rate,
        "mode": mode,
        "execution": execution,
        "compute": "modeled" if execution == "distributed" else "real",
        "backend": "netns",
        "seed": 0,
        "status": "ok",
        "topology": "ci-4stage",
        "shaper": "tbf",
        "fwd_wire_ratio": 1.0,
        "bwd_wire_ratio": 1.0,
        "tokens_per_s": 100.0,
        "eval_loss": None,
        "initial_loss": None,
        "final_loss": None,
        "device": "a10g",
        "error": None,
    }
    row.update(kw)
    return row


def _store(tmp_path: Path, rows: list[dict]) -> Path:
    store = ResultStore(tmp_path / "res")
    steps = [
        {
            "trial_id": r["trial_id"],
            "step": s,
            "loss": 5.0 - s * 0.1,
            "tokens": 100,
            "start": float(s),
            "end": s + 1.0,
            "stage": -1,
        }
        for r in rows
        for s in range(10)
    ]
    store.append("steps", steps)
    store.append("trials", rows)
    return store.root


def _dist_store(tmp_path: Path, step_s: dict[str, list[float]], rows: list[dict]) -> Path:
    """Distributed trials whose per-step times are given: step s of trial t lasts step_s[t][s]."""
    store = ResultStore(tmp_path / "res")
    steps = []
    for r in rows:
        end = 0.0
        for s, d in enumerate(step_s[r["trial_id"]]):
            steps.append(
                {
                    "trial_id": r["trial_id"],
                    "step": s,
                    "stage": 0,
                    "loss": None,
                    "tokens": 100,
                    "start": end,
                    "end": end + d,
                }
            )
            end += d
    store.append("steps", steps)
    store.append("trials", rows)
    return store.root


def _thr_rows(mode: str, ratio: float = 9.8) -> list[dict]:
    return [
        _trial(f"{mode}-base", "none", None, mode, "distributed"),
        _trial(
            f"{mode}-col",
            "column-fwd+bwd",
            0.9,
            mode,
            "distributed",
            fwd_link_wire_ratio=ratio,
            bwd_link_wire_ratio=ratio if mode == "train" else None,
        ),
    ]


def _gain_verdict(tmp_path: Path, base: list[float], comp: list[float], mode: str = "train", ratio: float = 9.8):
    rows = _thr_rows(mode, ratio)
    vs = verdicts(load(_dist_store(tmp_path, {rows[0]["trial_id"]: base, rows[1]["trial_id"]: comp}, rows)))
    return {v.claim: v for v in vs}


def test_training_gain_within_25_percent_of_the_claim_is_reproduced(tmp_path: Path) -> None:
    # warm-up step first (excluded); then the compressed steps are ~2.1x shorter, steadily
    v = _gain_verdict(tmp_path, [9, 4.0, 4.1, 3.9, 4.0, 4.05], [9, 1.9, 1.95, 1.9, 1.92, 1.88])[TRAIN_GAIN]
    assert v.verdict == "reproduced" and 2.0 < v.value < 2.2 and v.lo < v.value < v.hi and v.n == 5


def test_training_gain_far_above_the_claim_is_not_reproduced_larger(tmp_path: Path) -> None:
    v = _gain_verdict(tmp_path, [9, 4.0, 4.1, 3.9, 4.0], [9, 0.45, 0.44, 0.46, 0.45])[TRAIN_GAIN]
    assert v.verdict == "not reproduced (larger)" and v.value > 8 and v.value <= v.bound_value * 1.05


def test_training_gain_far_below_the_claim_is_not_reproduced_smaller(tmp_path: Path) -> None:
    v = _gain_verdict(tmp_path, [9, 4.0, 4.1, 3.9, 4.0], [9, 3.5, 3.6, 3.4, 3.5])[TRAIN_GAIN]
    assert v.verdict == "not reproduced (smaller)"


def test_a_noisy_gain_straddling_the_tolerance_is_inconclusive(tmp_path: Path) -> None:
    # step times so spread that the interval covers both 1.5x (edge) and well beyond 2.5x
    v = _gain_verdict(tmp_path, [9, 4.0, 6.0, 2.0, 5.0], [9, 1.0, 3.5, 1.2, 2.8])[TRAIN_GAIN]
    assert v.verdict.startswith("inconclusive") and v.lo < 1.5 < 2.5 < v.hi


def test_an_inference_claim_above_the_wire_ratio_exceeds_the_bound(tmp_path: Path) -> None:
    v = _gain_verdict(tmp_path, [9, 4.0, 4.0, 4.0], [9, 0.42, 0.41, 0.42], mode="infer")[INFER_GAIN]
    assert v.verdict == "exceeds bound — cannot hold" and v.bound_value == 9.8


def test_a_gain_above_the_bound_is_flagged_as_a_measurement_problem(tmp_path: Path) -> None:
    v = _gain_verdict(tmp_path, [9, 4.0, 4.0, 4.0], [9, 1.0, 1.0, 1.0], ratio=2.5)[TRAIN_GAIN]
    assert v.verdict == "measurement exceeds bound"


def test_the_training_claim_is_explained_by_the_condition_that_produces_it(tmp_path: Path) -> None:
    rows = _thr_rows("train") + [
        _trial("fwd-only", "column-fwd", 0.9, "train", "distributed", fwd_link_wire_ratio=9.8),
        _trial("heavy-base", "none", None, "train", "distributed", device="compute-heavy"),
        _trial(
            "heavy-col", "column-fwd+bwd", 0.9, "train", "distributed", device="compute-heavy", fwd_link_wire_ratio=9.8
        ),
    ]
    times = {
        "train-base": [9, 4.0, 4.1, 3.9, 4.0],
        "train-col": [9, 0.45, 0.44, 0.46, 0.45],
        "fwd-only": [9, 2.2, 2.25, 2.2, 2.3],
        "heavy-base": [9, 8, 8.1, 8, 8.2],
        "heavy-col": [9, 2, 2.1, 2, 2.05],
    }
    v = {v.claim: v for v in verdicts(load(_dist_store(tmp_path, times, rows)))}[TRAIN_GAIN]
    assert v.explanation.startswith("≈2× matches forward-only compression")
    assert "compute-heavier device 'compute-heavy', fwd+bwd: 3.9" in v.explanation  # measured, and not matching
    assert "2/(1+1/9.80) = 1.81×" in v.explanation


CONV = [
    ("none", None, 3.0),
    ("column-fwd+bwd", 0.9, 3.05),
    ("topk-fwd+bwd", 0.1, 3.5),
    ("topk-fwd", 0.9, 3.02),
    ("row-fwd+bwd", 0.9, 3.6),
    ("topk-fwd+bwd", 0.9, 4.0),
    ("column-fwd+bwd", 0.1, 3.01),
]


def _conv_verdicts(tmp_path: Path, noise: list[float]) -> dict:
    """The CONV table for seeds with the given per-seed offsets of every compressed run."""
    rows = [
        _trial(
            f"t{i}-{s}",
            c,
            r,
            "train",
            "twin",
            seed=s,
            eval_loss=e + (0 if c == "none" else noise[s] * ((i + s) % 3 - 1)),
            initial_loss=5.0,
        )
        for s in range(len(noise))
        for i, (c, r, e) in enumerate(CONV)
    ]
    return {v.claim: v for v in verdicts(load(_store(tmp_path, rows)))}


def test_convergence_claims_are_judged_size_by_size_with_a_headline_and_the_trend(tmp_path: Path) -> None:
    """Several model sizes in one table: each is judged on its own (gaps against the same-size,
    same-seed baseline), and a headline names the largest size where the interval decided."""
    col_loss = {64: 3.3, 128: 3.12, 256: 3.04}  # gap 0.15 -> 0.06 -> 0.02 against 3.0 (initial 5.0)
    rows = [
        _trial(
            f"d{d}-{c}-{s}",
            c,
            r,
            "train",
            "twin",
            seed=s,
            d_model=d,
            ctx=64,
            initial_loss=5.0,
            eval_loss=(3.0 if c == "none" else col_loss[d]) + 0.001 * s * (c != "none"),
        )
        for d in col_loss
        for s in range(3)
        for c, r in (("none", None), ("column-fwd+bwd", 0.9))
    ]
    vs = verdicts(load(_store(tmp_path, rows)))
    col = [v for v in vs if v.claim == "column fwd+bwd at 90% matches the baseline"]
    head, per_size = col[0], col[1:]
    assert [v.scale for v in per_size] == ["d=64, ctx 64", "d=128, ctx 64", "d=256, ctx 64"]
    assert [v.verdict for v in per_size] == ["not reproduced", "not reproduced", "reproduced"]
    assert per_size[0].shown == "not reproduced at d=64, ctx 64"
    assert head.verdict.startswith("reproduced at d=256, ctx 64 (not reproduced at d=64, ctx 64")
    assert "paper size (d=512, ctx 1024) not run" in head.verdict
    assert head.explanation.startswith("falls with width (ctx 64): +0.150 → +0.060 → +0.020")
    assert per_size[2].value == pytest.approx(0.0205, abs=1e-3)


def test_convergence_claims_decided_when_the_seed_interval_clears_the_threshold(tmp_path: Path) -> None:
    vs = _conv_verdicts(tmp_path, [0.001, -0.002, 0.0015])
    assert vs["column fwd+bwd at 90% matches the baseline"].verdict == "reproduced"  # gap 0.025 ± tiny
    assert vs["TopK fwd+bwd degrades even at 10%"].verdict == "reproduced"  # gap 0.25
    assert vs["TopK fwd-only keeps convergence at 90%"].verdict == "reproduced"  # gap 0.01
    assert vs["row masking at 90% degrades (vs column)"].verdict == "reproduced"
    assert vs["column beats TopK (fwd+bwd) at every rate"].verdict == "reproduced"
    v = vs["column fwd+bwd at 90% matches the baseline"]
    assert v.n == 3 and v.lo < v.value < v.hi < 0.05


def test_convergence_claims_refuted_with_confidence_are_not_reproduced(tmp_path: Path) -> None:
    rows = [_trial(f"b{s}", "none", None, "train", "twin", seed=s, eval_loss=3.0, initial_loss=5.0) for s in range(3)]
    rows += [
        _trial(f"c{s}", "column-fwd+bwd", 0.9, "train", "twin", seed=s, eval_loss=3.4 + 0.01 * s, initial_loss=5.0)
        for s in range(3)
    ]
    vs = {v.claim: v for v in verdicts(load(_store(tmp_path, rows)))}
    assert vs["column fwd+bwd at 90% matches the baseline"].verdict == "not reproduced"  # gap 0.2, tight


def test_noisy_or_single_seed_convergence_claims_are_inconclusive(tmp_path: Path) -> None:
    vs = _conv_verdicts(tmp_path, [0.2, -0.25, 0.3])  # seed noise far above the 0.05 threshold
    assert vs["column fwd+bwd at 90% matches the baseline"].verdict == "inconclusive (3 seeds)"
    one = _conv_verdicts(tmp_path / "one", [0.0])
    assert all(
        v.verdict == "inconclusive (1 seeds)" for k, v in one.items() if "gain" not in k and v.verdict != "not measured"
    )


def test_report_html_is_self_contained_with_captions(tmp_path: Path) -> None:
    rows = [
        _trial("a", "none", None, "train", "twin", eval_loss=3.0, initial_loss=5.0),
        _trial("b", "column-fwd+bwd", 0.5, "train", "twin", eval_loss=3.1, initial_loss=5.0),
    ]
    root = _store(tmp_path, rows)
    path, vs = build_report(root)
    text = path.read_text()
    assert "data:image/png;base64," in text and "<img src='http" not in text
    png = text.split("data:image/png;base64,")[1].split("'")[0]
    assert base64.b64decode(png)[:4] == b"\x89PNG"
    assert "execution: twin" in text and "seed: 0" in text  # captions say how numbers were obtained
    assert (root / "loss_by_rate.png").exists() and (root / "trials.csv").exists()
    # a plain suite's report knows no paper: no claims, no verdicts, no paper named anywhere
    assert vs == [] and not (root / "verdicts.csv").exists()
    assert "Claims" not in text and "Top-K" not in text and "paper" not in text.lower()


def test_pipenem_report_adds_claims_only_for_a_papers_suites(tmp_path: Path) -> None:
    rows = [
        _trial("a", "none", None, "train", "twin", eval_loss=3.0, initial_loss=5.0),
        _trial("b", "column-fwd+bwd", 0.5, "train", "twin", eval_loss=3.1, initial_loss=5.0),
    ]
    plain = pipenem("report", str(_store(tmp_path / "plain", rows)))
    assert plain.returncode == 0 and "claims vs measured" not in plain.stdout, plain.stdout + plain.stderr
    html_text = (tmp_path / "plain" / "res" / "report.html").read_text()
    assert "Beyond Top-K" not in html_text and "<h2>Claims" not in html_text
    paper = pipenem("report", str(_store(tmp_path / "paper", [{**r, "suite": "ci-convergence"} for r in rows])))
    assert paper.returncode == 0 and "Beyond Top-K: claims vs measured" in paper.stdout, paper.stdout + paper.stderr
    assert pd.read_csv(tmp_path / "paper" / "res" / "verdicts.csv").shape[0] > 0
    assert "<h2>Claims" in (tmp_path / "paper" / "res" / "report.html").read_text()


def test_throughput_claims_use_only_trials_of_the_papers_model(tmp_path: Path) -> None:
    """Distributed trials of another model (e.g. time-to-target runs of the small convergence
    model) are not mixed into the paper's throughput claims."""
    rows = [{**r, "d_model": 512, "ctx": 1024} for r in _thr_rows("train")] + [
        _trial("small-base", "none", None, "train", "distributed", d_model=64, ctx=64),
        _trial("small-col", "column-fwd+bwd", 0.9, "train", "distributed", d_model=64, ctx=64, fwd_link_wire_ratio=9.0),
    ]
    times = {
        "train-base": [9, 4.0, 4.1, 3.9, 4.0],
        "train-col": [9, 1.9, 2.0, 1.95, 2.0],
        "small-base": [9, 1.0, 1.0, 1.0, 1.0],
        "small-col": [9, 0.9, 0.9, 0.9, 0.9],
    }
    v = {v.claim: v for v in verdicts(load(_dist_store(tmp_path, times, rows)))}[TRAIN_GAIN]
    assert v.verdict == "reproduced" and v.n == 4 and 1.95 < v.value < 2.1
