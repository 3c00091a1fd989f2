"""Claims of seed 003 ("Activations and Gradients Compression for Model-Parallel Training",
Rudakov et al., arXiv 2401.07788) against what the tables measured, with intervals.

Rules (fixed before any run of its suites, never tuned to make a claim pass):

- Trials are grouped by *model* (model, width, depth, context, dataset): each claim gets one
  verdict per model, with that model as its scale. The image model is judged on held-out
  accuracy, the language model on held-out loss.
- *harm* of a configuration, per seed, against the baseline (``none``) run with the same seed:
  accuracy points lost (image model: 100 · (acc_base − acc)), or the *gap* of Beyond Top-K
  (language model: (loss − loss_base) / (initial_base − loss_base), the fraction of the
  baseline's learning lost). Over seeds: mean and 95% Student-t interval.
- A difference is *material* above 1 accuracy point (gap 0.05); harm is *severe* above
  5 accuracy points (gap 0.25). A rule is decided only when the whole interval lies on one
  side of its threshold, else the verdict is *inconclusive (n seeds)*; one seed decides nothing.

1. Gradients need milder compression than activations: for every compressor and level run
   on one direction at a time (labels ``X-fwd`` / ``X-bwd``), d = harm(bwd only) − harm(fwd
   only), paired by seed. Reproduced: some pair has d > 0 and none has d < 0; not
   reproduced: some pair has d < 0, or every pair has d < material.
2. TopK keeping 10% is the strongest level without severe harm, keeping 5% harms severely
   (``topk-fwd+bwd``, rates 0.9 and 0.95). Reproduced: 10% and every milder level not severe,
   5% severe; not reproduced: 10% or a milder level severe, or 5% not severe.
3. Error feedback does not improve model-parallel training: improvement = harm(plain TopK) −
   harm(EF or EF21 around TopK), same level, paired by seed. Reproduced: every wrapper's
   improvement < material; not reproduced: some wrapper's > material.
4. A TopK-trained model needs compression at inference: benefit = accuracy with the training
   compressor at inference − without (points; language model: (loss without − loss with) over
   the baseline's learning), same trial, at TopK 10% (the paper's recommended level).
   Reproduced: benefit > material; not reproduced: benefit < material. The paper's 7–15 points
   are compared in the explanation.
"""

from __future__ import annotations

import math

import pandas as pd

from reports.stats import METHOD_SEEDS, Estimate, t_interval
from reports.tables import Tables
from reports.verdicts import Verdict, inconclusive

ACCURACY_DATASETS = {"digits"}  # models judged on held-out accuracy (the others on held-out loss)
MODEL_KEYS = ("model", "d_model", "n_layers", "ctx", "dataset")
MATERIAL = {"accuracy": 1.0, "loss": 0.05}
SEVERE = {"accuracy": 5.0, "loss": 0.25}
UNITS = {"accuracy": " pts", "loss": ""}
TOPK = "topk-fwd+bwd"
LEVEL_10, LEVEL_5 = 0.9, 0.95  # TopK keeping 10% / 5%
WRAPPERS = ("ef-topk-fwd+bwd", "ef21-topk-fwd+bwd")
PUBLISHED_BENEFIT = (7.0, 15.0)  # accuracy points, compressed vs uncompressed inference

MILDER = "gradients need milder compression than activations"
TOPK10 = "TopK keeping 10% is the strongest level without severe harm"
EF = "error feedback (EF, EF21) does not improve on plain TopK"
INFERENCE = "a TopK-trained model needs compression at inference"
CLAIMS = {
    MILDER: "the same compressor and level hurts more on gradients than on activations (abstract, §4)",
    TOPK10: "Top10% does not severely harm convergence, Top5% does (levels 50/30/20/10/5%)",
    EF: "error feedback does not improve model-parallel training over plain compression (abstract)",
    INFERENCE: "with compression at inference, test accuracy is 7–15 points higher than without (§4)",
}


# ------------------------------------------------------------------ the models and their metric


def trials(tables: Tables) -> pd.DataFrame:
    """Ok training trials with a held-out evaluation, default variant only."""
    t = tables.ok
    if t.empty or "eval_loss" not in t.columns:
        return t.iloc[0:0]
    t = t[(t["mode"] == "train") & t["eval_loss"].notna()]
    if "variant" in t.columns:
        t = t[t["variant"].fillna("") == ""]
    return t


def models(conv: pd.DataFrame) -> list[tuple]:
    """The models the trials were run on (values of MODEL_KEYS), in a stable order."""
    keys = [k for k in MODEL_KEYS if k in conv.columns]
    if conv.empty:
        return []
    return sorted(conv[keys].astype(str).drop_duplicates().itertuples(index=False, name=None))


def of_model(conv: pd.DataFrame, model: tuple) -> pd.DataFrame:
    keys = [k for k in MODEL_KEYS if k in conv.columns]
    mask = pd.Series(True, index=conv.index)
    for k, v in zip(keys, model, strict=True):
        mask &= conv[k].astype(str) == v
    return conv[mask]


def metric(sel: pd.DataFrame) -> str:
    """accuracy (an image dataset) or loss."""
    datasets = set(sel["dataset"].dropna()) if "dataset" in sel.columns else set()
    return "accuracy" if datasets and datasets <= ACCURACY_DATASETS else "loss"


def model_text(sel: pd.DataFrame) -> str:
    r = sel.iloc[0]
    name = str(r.get("model", "?"))
    if name.startswith("factory:"):
        name = name.rsplit(":", 1)[0].rsplit(".", 1)[-1]  # factory:papers.x.resnet:build_stages -> resnet
    return f"{name} d={r.get('d_model')} L={r.get('n_layers')} ctx {r.get('ctx')}, {r.get('dataset')}"


def _select(sel: pd.DataFrame, label: str, rate: float | None) -> pd.DataFrame:
    s = sel[sel["compressor"] == label]
    if rate is None:
        return s[s["rate"].isna()]
    return s[(s["rate"] - rate).abs() < 1e-9]


def _by_seed(s: pd.DataFrame, column: str) -> dict[int, float]:
    return {int(seed): float(g[column].mean()) for seed, g in s.groupby("seed") if g[column].notna().any()}


def harm(sel: pd.DataFrame, label: str, rate: float | None) -> dict[int, float]:
    """Per seed: accuracy points lost, or the loss gap, against the baseline with that seed."""
    kind = metric(sel)
    base = sel[sel["compressor"] == "none"]
    comp = _select(sel, label, rate)
    if kind == "accuracy":
        b, c = _by_seed(base, "eval_accuracy"), _by_seed(comp, "eval_accuracy")
        return {s: 100.0 * (b[s] - c[s]) for s in sorted(set(b) & set(c))}
    b, b0, c = _by_seed(base, "eval_loss"), _by_seed(base, "initial_loss"), _by_seed(comp, "eval_loss")
    return {s: (c[s] - b[s]) / (b0[s] - b[s]) for s in sorted(set(b) & set(c) & set(b0))}


def paired(a: dict[int, float], b: dict[int, float]) -> Estimate:
    """Over seeds both have: a − b."""
    return t_interval([a[s] - b[s] for s in sorted(set(a) & set(b))])


def inference_benefit(sel: pd.DataFrame, label: str, rate: float) -> Estimate:
    """Per seed: what compression at inference gains over serving the same model without it."""
    comp = _select(sel, label, rate)
    if "eval_accuracy_uncompressed" not in comp.columns:
        return t_interval([])
    if metric(sel) == "accuracy":
        w, wo = _by_seed(comp, "eval_accuracy"), _by_seed(comp, "eval_accuracy_uncompressed")
        return t_interval([100.0 * (w[s] - wo[s]) for s in sorted(set(w) & set(wo))])
    base = sel[sel["compressor"] == "none"]
    b, b0 = _by_seed(base, "eval_loss"), _by_seed(base, "initial_loss")
    w, wo = _by_seed(comp, "eval_loss"), _by_seed(comp, "eval_loss_uncompressed")
    seeds = sorted(set(w) & set(wo) & set(b) & set(b0))
    return t_interval([(wo[s] - w[s]) / (b0[s] - b[s]) for s in seeds])


# ------------------------------------------------------------------ the four rules


def _fmt(est: Estimate, kind: str) -> str:
    return est.fmt("+.2f" if kind == "accuracy" else "+.3f", UNITS[kind])


def _verdict(claim: str, est: Estimate, measured: str, verdict: str, rule: str, scale: str, why: str = "") -> Verdict:
    if est.n == 0:
        return Verdict(claim, CLAIMS[claim], "not measured", "-", "not measured", why or "trials missing", scale=scale)
    return Verdict(
        claim,
        CLAIMS[claim],
        measured,
        "-",
        verdict,
        f"rule: {rule}; {METHOD_SEEDS}, held-out set, single-process twin",
        est.mean,
        None,
        est.lo if est.has_interval else None,
        est.hi if est.has_interval else None,
        est.n,
        scale=scale,
    )


def direction_pairs(sel: pd.DataFrame) -> list[tuple[str, float | None]]:
    """(compressor prefix, rate) run forward-only as ``X-fwd`` and backward-only as ``X-bwd``."""
    got = {(c, None if math.isnan(r) else float(r)) for c, r in sel[["compressor", "rate"]].itertuples(index=False)}
    return sorted(
        ((c[: -len("-fwd")], r) for c, r in got if c.endswith("-fwd") and (c[: -len("-fwd")] + "-bwd", r) in got),
        key=lambda p: (p[0], -1 if p[1] is None else p[1]),
    )


def _level(prefix: str, rate: float | None) -> str:
    return prefix if rate is None else f"{prefix} keep {1 - rate:.0%}"


def milder_verdict(sel: pd.DataFrame, scale: str) -> Verdict:
    kind = metric(sel)
    diffs = [(p, paired(harm(sel, f"{p[0]}-bwd", p[1]), harm(sel, f"{p[0]}-fwd", p[1]))) for p in direction_pairs(sel)]
    diffs = [(p, d) for p, d in diffs if d.n]
    if not diffs:
        return _verdict(MILDER, t_interval([]), "", "", "", scale, "no X-fwd / X-bwd pair of one compressor and level")
    m = MATERIAL[kind]
    if any(d.has_interval and d.hi < 0 for _, d in diffs) or all(d.below(m) for _, d in diffs):
        v = "not reproduced"
    elif any(d.above(0) for _, d in diffs):
        v = "reproduced"
    else:
        v = inconclusive(min(d.n for _, d in diffs))
    measured = "; ".join(f"{_level(*p)}: harm bwd − fwd {_fmt(d, kind)}" for p, d in diffs)
    top = max(diffs, key=lambda pd_: pd_[1].mean)[1]
    rule = f"harm(bwd only) − harm(fwd only) > 0 for some pair, < 0 for none; all < {m:g} refutes (whole intervals)"
    return _verdict(MILDER, top, measured, v, rule, scale)


def topk10_verdict(sel: pd.DataFrame, scale: str) -> Verdict:
    kind = metric(sel)
    rates = sorted(set(sel.loc[sel["compressor"] == TOPK, "rate"].dropna()))
    est = {r: t_interval(list(harm(sel, TOPK, r).values())) for r in rates}
    est = {r: e for r, e in est.items() if e.n}
    if LEVEL_10 not in est or LEVEL_5 not in est:
        return _verdict(TOPK10, t_interval([]), "", "", "", scale, f"{TOPK} at keep 10% and 5% not both measured")
    s = SEVERE[kind]
    milder = [r for r in est if r < LEVEL_10]
    if est[LEVEL_10].above(s) or any(est[r].above(s) for r in milder) or est[LEVEL_5].below(s):
        v = "not reproduced"
    elif est[LEVEL_10].below(s) and all(est[r].below(s) for r in milder) and est[LEVEL_5].above(s):
        v = "reproduced"
    else:
        v = inconclusive(min(e.n for e in est.values()))
    measured = "; ".join(f"keep {1 - r:.0%}: harm {_fmt(e, kind)}" for r, e in sorted(est.items()))
    rule = f"harm ≤ {s:g}{UNITS[kind]} at keep ≥ 10%, > {s:g}{UNITS[kind]} at keep 5% (whole intervals)"
    return _verdict(TOPK10, est[LEVEL_5], measured, v, rule, scale)


def ef_verdict(sel: pd.DataFrame, scale: str) -> Verdict:
    kind = metric(sel)
    got = []
    for w in WRAPPERS:
        for r in sorted(set(sel.loc[sel["compressor"] == w, "rate"].dropna())):
            d = paired(harm(sel, TOPK, r), harm(sel, w, r))
            if d.n:
                got.append((w, r, d))
    if not got:
        return _verdict(EF, t_interval([]), "", "", "", scale, f"no EF/EF21 trial with a plain {TOPK} twin")
    m = MATERIAL[kind]
    if any(d.above(m) for _, _, d in got):
        v = "not reproduced"
    elif all(d.below(m) for _, _, d in got):
        v = "reproduced"
    else:
        v = inconclusive(min(d.n for _, _, d in got))
    measured = "; ".join(
        f"{w.split('-')[0]} keep {1 - r:.0%}: improvement over plain {_fmt(d, kind)}" for w, r, d in got
    )
    best = max(got, key=lambda g: g[2].mean)[2]
    rule = f"improvement = harm(plain) − harm(wrapped) ≤ {m:g}{UNITS[kind]} for every wrapper (whole intervals)"
    return _verdict(EF, best, measured, v, rule, scale)


def inference_verdict(sel: pd.DataFrame, scale: str) -> Verdict:
    kind = metric(sel)
    rates = sorted(set(sel.loc[sel["compressor"] == TOPK, "rate"].dropna()))
    est = {r: inference_benefit(sel, TOPK, r) for r in rates}
    est = {r: e for r, e in est.items() if e.n}
    if LEVEL_10 not in est:
        why = f"no {TOPK} keep-10% trial evaluated without compression (train.eval_uncompressed)"
        return _verdict(INFERENCE, t_interval([]), "", "", "", scale, why)
    e, m = est[LEVEL_10], MATERIAL[kind]
    v = "reproduced" if e.above(m) else "not reproduced" if e.below(m) else inconclusive(e.n)
    measured = "; ".join(f"keep {1 - r:.0%}: with − without {_fmt(x, kind)}" for r, x in est.items())
    rule = f"benefit of compression at inference > {m:g}{UNITS[kind]} at keep 10% (whole interval)"
    out = _verdict(INFERENCE, e, measured, v, rule, scale)
    if kind == "accuracy":
        lo, hi = PUBLISHED_BENEFIT
        where = "within" if lo <= e.mean <= hi else "below" if e.mean < lo else "above"
        stronger = [f"keep {1 - r:.0%}: {x.mean:+.1f}" for r, x in est.items() if r > LEVEL_10]
        out.explanation = f"at keep 10% the benefit {e.mean:+.1f} points is {where} the published {lo:g}–{hi:g}" + (
            f"; it grows with the rate ({', '.join(stronger)} points)" if stronger else ""
        )
    return out


RULES = (milder_verdict, topk10_verdict, ef_verdict, inference_verdict)


def verdicts(tables: Tables) -> list[Verdict]:
    """Each claim on each model the tables hold (claims outer, models inner)."""
    conv = trials(tables)
    ms = models(conv)
    if not ms:
        why = "no training trials with a held-out evaluation in the tables"
        return [Verdict(c, pub, "not measured", "-", "not measured", why) for c, pub in CLAIMS.items()]
    per_model = [(of_model(conv, m),) for m in ms]
    return [rule(sel, model_text(sel)) for rule in RULES for (sel,) in per_model]
