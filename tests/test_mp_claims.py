"""Seed 003's claims (papers/mp_compression/claims.py) on hand-made tables: each rule decides
reproduced / not reproduced / inconclusive as written, per model; its report carries its claims
and none of Beyond Top-K's, and the other way round."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import papers
from harness.results.store import ResultStore
from papers.mp_compression.claims import EF, INFERENCE, MILDER, TOPK10, verdicts
from reports.tables import Tables, load

CNN = {"model": "factory:papers.mp_compression.resnet:build_stages", "d_model": 32, "n_layers": 8, "ctx": 64}
LM = {"model": "builtin", "d_model": 64, "n_layers": 4, "ctx": 64}
NOISE = (-0.2, 0.0, 0.2)  # per seed, in the metric's unit (accuracy points / loss)


def _row(model: dict, dataset: str, comp: str, rate: float | None, seed: int, **values: float) -> dict:
    return {
        "trial_id": f"{dataset}-{comp}-{rate}-{seed}",
        "suite": "mp-compression-cnn-quick" if dataset == "digits" else "mp-compression-lm-quick",
        "status": "ok",
        "mode": "train",
        "variant": "",
        "execution": "twin",
        "compressor": comp,
        "rate": rate,
        "seed": seed,
        "dataset": dataset,
        **model,
        **values,
    }


def cnn(harms: dict[tuple[str, float | None], float], benefit: dict[float, float] | None = None, spread=1.0):
    """Image-model trials: baseline 98% accuracy; each configuration loses ``harms`` points
    (+ seeded noise × spread); TopK trials served without compression lose ``benefit`` more."""
    rows = []
    for seed, n in enumerate(NOISE):
        rows.append(_row(CNN, "digits", "none", None, seed, eval_loss=0.05, initial_loss=2.3, eval_accuracy=0.98))
        for (comp, rate), h in harms.items():
            acc = 0.98 - (h + n * spread) / 100
            unc = acc - (benefit or {}).get(rate, 0.0) / 100 if comp == "topk-fwd+bwd" else acc
            rows.append(
                _row(
                    CNN,
                    "digits",
                    comp,
                    rate,
                    seed,
                    eval_loss=0.1,
                    initial_loss=2.3,
                    eval_accuracy=acc,
                    eval_accuracy_uncompressed=unc,
                    eval_loss_uncompressed=0.2,
                )
            )
    return rows


def lm(gaps: dict[tuple[str, float | None], float]) -> list[dict]:
    """Language-model trials: baseline 2.0 from 5.0; each configuration loses ``gaps`` of that learning."""
    rows = []
    for seed, n in enumerate(NOISE):
        rows.append(_row(LM, "pystdlib", "none", None, seed, eval_loss=2.0, initial_loss=5.0))
        for (comp, rate), g in gaps.items():
            loss = 2.0 + 3.0 * (g + n / 100)
            rows.append(
                _row(LM, "pystdlib", comp, rate, seed, eval_loss=loss, initial_loss=5.0, eval_loss_uncompressed=loss)
            )
    return rows


def _verdicts(rows: list[dict]) -> dict[tuple[str, str], object]:
    e = pd.DataFrame()
    return {(v.claim, v.scale): v for v in verdicts(Tables(pd.DataFrame(rows), e, e, e))}


def _one(rows: list[dict], claim: str):
    got = [v for (c, _), v in _verdicts(rows).items() if c == claim]
    assert len(got) == 1
    return got[0]


TOPK_OK = {("topk-fwd+bwd", r): h for r, h in [(0.5, 0.1), (0.8, 0.3), (0.9, 1.0), (0.95, 12.0)]}


def test_topk_10_percent_holds_and_5_percent_harms_severely() -> None:
    v = _one(cnn(TOPK_OK), TOPK10)
    assert v.verdict == "reproduced" and v.n == 3 and "keep 5%" in v.measured and "pts" in v.measured
    assert v.scale.startswith("resnet d=32") and "digits" in v.scale


@pytest.mark.parametrize(
    "change",
    [{("topk-fwd+bwd", 0.95): 1.0}, {("topk-fwd+bwd", 0.9): 12.0}, {("topk-fwd+bwd", 0.5): 12.0}],
    ids=["5%-harmless", "10%-severe", "milder-severe"],
)
def test_topk_levels_that_contradict_the_claim_refute_it(change: dict) -> None:
    assert _one(cnn({**TOPK_OK, **change}), TOPK10).verdict == "not reproduced"


def test_noisy_levels_are_inconclusive_and_missing_ones_not_measured() -> None:
    assert _one(cnn(TOPK_OK, spread=30.0), TOPK10).verdict == "inconclusive (3 seeds)"
    assert _one(cnn({("topk-fwd+bwd", 0.9): 1.0}), TOPK10).verdict == "not measured"


def test_gradients_hurt_more_than_activations_per_pair() -> None:
    harms = {
        ("topk-fwd", 0.95): 0.5,
        ("topk-bwd", 0.95): 6.0,
        ("quantize2-fwd", None): 0.2,
        ("quantize2-bwd", None): 0.3,
    }
    v = _one(cnn(harms), MILDER)
    assert v.verdict == "reproduced" and "quantize2" in v.measured and "topk keep 5%" in v.measured
    flipped = {("topk-fwd", 0.95): 6.0, ("topk-bwd", 0.95): 0.5}
    assert _one(cnn(flipped), MILDER).verdict == "not reproduced"  # activations hurt more, with confidence
    equal = {("topk-fwd", 0.95): 2.0, ("topk-bwd", 0.95): 2.0}
    assert _one(cnn(equal), MILDER).verdict == "not reproduced"  # no material difference anywhere


def test_error_feedback_that_helps_refutes_the_claim() -> None:
    base = {("topk-fwd+bwd", 0.95): 10.0}
    worse = {**base, ("ef-topk-fwd+bwd", 0.95): 40.0, ("ef21-topk-fwd+bwd", 0.95): 10.5}
    assert _one(cnn(worse), EF).verdict == "reproduced"
    helps = {**base, ("ef-topk-fwd+bwd", 0.95): 10.0, ("ef21-topk-fwd+bwd", 0.95): 3.0}
    v = _one(cnn(helps), EF)
    assert v.verdict == "not reproduced" and "ef21 keep 5%" in v.measured


def test_compression_at_inference_benefit_against_the_published_range() -> None:
    v = _one(cnn(TOPK_OK, benefit={0.9: 10.0, 0.95: 40.0}), INFERENCE)
    assert v.verdict == "reproduced" and "within the published 7–15" in v.explanation
    assert "grows with the rate" in v.explanation
    assert _one(cnn(TOPK_OK, benefit={0.9: 0.0}), INFERENCE).verdict == "not reproduced"


def test_the_language_model_is_judged_on_loss_gaps_beside_the_image_model() -> None:
    gaps = {("topk-fwd+bwd", 0.5): 0.02, ("topk-fwd+bwd", 0.9): 0.1, ("topk-fwd+bwd", 0.95): 0.5}
    by = _verdicts(cnn(TOPK_OK) + lm(gaps))
    scales = {s for _, s in by}
    assert len(scales) == 2 and any(s.startswith("builtin d=64") for s in scales)
    lm_v = next(v for (c, s), v in by.items() if c == TOPK10 and s.startswith("builtin"))
    assert lm_v.verdict == "reproduced" and "pts" not in lm_v.measured
    assert len(by) == 8  # four claims × two models


def _results(tmp: Path, rows: list[dict]) -> Path:
    store = ResultStore(tmp)
    store.append("trials", [{**r, "initial_loss": r["initial_loss"], "final_loss": r["eval_loss"]} for r in rows])
    return store.root


def test_each_papers_report_carries_its_own_claims_only(tmp_path: Path) -> None:
    assert set(papers.PAPERS) == {"beyond-topk", "mp-compression"}
    mine = papers.for_suites({"mp-compression-cnn-quick", "mp-compression-lm-quick"})
    assert mine is not None and mine.NAME == "mp-compression"
    assert papers.for_suites({"ci-convergence"}).NAME == "beyond-topk"
    root = _results(tmp_path / "mp", cnn(TOPK_OK))
    path, vs = mine.report(root)
    text = path.read_text()
    assert {v.claim for v in vs} == {MILDER, TOPK10, EF, INFERENCE}
    assert "Top10%" in text and "column masking" not in text
    bt = papers.get("beyond-topk")
    _, bvs = bt.report(root)
    assert not {v.claim for v in bvs} & {MILDER, TOPK10, EF, INFERENCE}
    assert load(root).trials.shape[0] == len(cnn(TOPK_OK))
