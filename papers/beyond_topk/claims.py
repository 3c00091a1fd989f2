"""Claims of "Beyond Top-K" against what the tables measured, with intervals and physical bounds.

Rules (fixed before looking at any result, never tuned to make a claim pass):

- *gap* of a compressor, per seed = (its held-out loss − the baseline's) / (the baseline's
  initial loss − its held-out loss), against the baseline run with the same seed: the
  fraction of the baseline's learning it lost. Over seeds: mean and 95% Student-t interval.
  "Matches the baseline" means gap ≤ 0.05; "degrades" means gap > 0.05.
- A convergence claim is *reproduced* or *not reproduced* only when the whole interval lies
  on one side of its threshold; otherwise it is *inconclusive (n seeds)*. One seed never
  decides anything.
- A throughput claim is checked against the measured gain (step time without compression ÷
  with it, same config, pipeline over the emulated links; 95% bootstrap interval over steps).
  The bound: over a bandwidth-bound link a compressor cannot gain more than the wire ratio
  of the bytes the links carried. A claim above the bound: "exceeds bound — cannot hold".
  Otherwise *reproduced* when the interval lies within ±25% of the claim, *not reproduced
  (larger|smaller)* when it lies entirely outside, else inconclusive. The conditions that
  could produce a claim (forward-only compression, a compute-heavier device) are measured
  and reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from reports.stats import METHOD_SEEDS, METHOD_STEPS, Estimate, ratio_interval, t_interval
from reports.tables import Tables, gain_bound, step_seconds, wire_bound, wire_ratios
from reports.verdicts import ALL_SIZES, Verdict, decide, inconclusive

MATCH_GAP = 0.05
CLAIM_TOLERANCE = 0.25  # a throughput claim is reproduced within ±25%
# A measured gain may sit slightly above the wire ratio: the runs last different times, so
# they span different re-sampled bandwidth windows of the slow links.
BOUND_SLACK = 1.05
PAPER_DEVICE = "a10g"  # the paper's GPU: its claims are checked on this modeled profile
# The throughput claims are about the paper's model width and context: trials of other models
# (e.g. the time-to-target trials at the quick tier's size) are not compared against them.
PAPER_MODEL = {"d_model": 512, "ctx": 1024}

TRAIN_GAIN = "training gain ≈2×, column 90%"
INFER_GAIN = "inference gain ≈12× (abstract), column 90%"
INFER_GAIN_53 = "inference gain ≈20× (§5.3), column 90%"


def convergence_trials(tables: Tables) -> pd.DataFrame:
    """Ok training trials with a held-out loss, default variant only (no ``set`` axis values)."""
    t = tables.ok
    if t.empty or "eval_loss" not in t.columns:
        return t.iloc[0:0]
    t = t[(t["mode"] == "train") & t["eval_loss"].notna()]
    if "variant" in t.columns:
        t = t[t["variant"].fillna("") == ""]
    return t


def seed_gaps(conv: pd.DataFrame, label: str, rate: float | None) -> dict[int, float]:
    """Per seed: the gap of ``label`` at ``rate`` against the baseline run with that seed
    (``conv`` holds trials of one model size)."""
    base = conv[conv["compressor"] == "none"].groupby("seed")
    sel = conv[conv["compressor"] == label]
    if rate is not None:
        sel = sel[(sel["rate"] - rate).abs() < 1e-9]
    out = {}
    for seed, g in sel.groupby("seed"):
        if seed not in base.groups:
            continue
        b = base.get_group(seed)
        b_eval, b_init = b["eval_loss"].mean(), b["initial_loss"].mean()
        out[int(seed)] = float((g["eval_loss"].mean() - b_eval) / (b_init - b_eval))
    return out


def gap(conv: pd.DataFrame, label: str, rate: float | None) -> Estimate:
    return t_interval(list(seed_gaps(conv, label, rate).values()))


def paired_difference(conv: pd.DataFrame, a: tuple[str, float], b: tuple[str, float]) -> Estimate:
    """Over seeds both have: gap(a) − gap(b)."""
    ga, gb = seed_gaps(conv, *a), seed_gaps(conv, *b)
    return t_interval([ga[s] - gb[s] for s in sorted(set(ga) & set(gb))])


# ------------------------------------------------------------------ convergence claims, size by size

Size = tuple[int, int] | None  # (d_model, ctx); None: tables that do not record the size


def sizes(conv: pd.DataFrame) -> list[Size]:
    """The model sizes the convergence trials were run at, smallest first."""
    if conv.empty:
        return []
    if not {"d_model", "ctx"} <= set(conv.columns) or conv[["d_model", "ctx"]].isna().all(axis=None):
        return [None]
    pairs = conv[["d_model", "ctx"]].dropna().drop_duplicates()
    return sorted((int(d), int(c)) for d, c in pairs.itertuples(index=False))


def at_size(conv: pd.DataFrame, size: Size) -> pd.DataFrame:
    if size is None:
        return conv
    return conv[(conv["d_model"] == size[0]) & (conv["ctx"] == size[1])]


def scale_text(size: Size) -> str:
    return "size not recorded" if size is None else f"d={size[0]}, ctx {size[1]}"


@dataclass(frozen=True)
class GapClaim:
    """A claim about one compressor's gap at one rate: it matches the baseline, or degrades."""

    claim: str
    published: str
    label: str
    rate: float
    matches: bool  # True: "gap ≤ MATCH_GAP" is the claim; False: "gap > MATCH_GAP" is


GAP_CLAIMS = (
    GapClaim(
        "column fwd+bwd at 90% matches the baseline",
        "column masking matches uncompressed convergence at 90% (Fig. 3)",
        "column-fwd+bwd",
        0.9,
        True,
    ),
    GapClaim(
        "TopK fwd+bwd degrades even at 10%",
        "compressing gradients with TopK diverges even at mild rates (Fig. 1)",
        "topk-fwd+bwd",
        0.1,
        False,
    ),
    GapClaim(
        "TopK fwd-only keeps convergence at 90%",
        "compressing only the forward pass converges well even when aggressive (Fig. 1)",
        "topk-fwd",
        0.9,
        True,
    ),
)
ROW_CLAIM = ("row masking at 90% degrades (vs column)", "masking rows (tokens) instead of columns degrades (ablation)")
COLUMN_TOPK_CLAIM = (
    "column beats TopK (fwd+bwd) at every rate",
    "column's error bound grows gracefully, TopK's diverges (Thm 3.2 vs 4.1)",
)
# claim -> as published, in the order the verdicts are listed
CONVERGENCE_CLAIMS = {c.claim: c.published for c in GAP_CLAIMS} | dict([ROW_CLAIM, COLUMN_TOPK_CLAIM])


def _conv_verdict(
    claim: str,
    published: str,
    est: Estimate,
    verdict: str,
    rule: str,
    size: Size,
    measured: str | None = None,
) -> Verdict:
    scale = scale_text(size)
    if est.n == 0:
        return Verdict(
            claim,
            published,
            "not measured",
            "-",
            "not measured",
            "the trials it needs are not in the tables",
            scale=scale,
        )
    return Verdict(
        claim,
        published,
        measured or f"gap {est.fmt()}",
        "-",
        verdict,
        f"rule: {rule}; {METHOD_SEEDS}, held-out loss, single-process twin",
        est.mean,
        None,
        est.lo if est.has_interval else None,
        est.hi if est.has_interval else None,
        est.n,
        scale=scale,
    )


def _gap_verdict(conv: pd.DataFrame, c: GapClaim, size: Size) -> Verdict:
    est = gap(conv, c.label, c.rate)
    below, above = (lambda e: e.below(MATCH_GAP)), (lambda e: e.above(MATCH_GAP))
    verdict = decide(est, below, above) if c.matches else decide(est, above, below)
    rule = f"gap {'≤' if c.matches else '>'} {MATCH_GAP} (whole interval)"
    return _conv_verdict(c.claim, c.published, est, verdict, rule, size)


def _row_verdict(conv: pd.DataFrame, size: Size) -> Verdict:
    row9 = gap(conv, "row-fwd+bwd", 0.9)
    diff = paired_difference(conv, ("row-fwd+bwd", 0.9), ("column-fwd+bwd", 0.9))
    if diff.n and row9.n:
        if diff.above(0) and row9.above(MATCH_GAP):
            v = "reproduced"
        elif diff.below(0) or row9.below(MATCH_GAP):
            v = "not reproduced"
        else:
            v = inconclusive(diff.n)
    else:
        v = "not measured"
    return _conv_verdict(
        *ROW_CLAIM,
        diff,
        v,
        f"row − column gap > 0 and row gap > {MATCH_GAP} (whole intervals)",
        size,
        measured=f"row gap {row9.fmt()}; row − column {diff.fmt()}",
    )


def _column_vs_topk(conv: pd.DataFrame, size: Size) -> Verdict:
    rates = sorted(set(conv.loc[conv["compressor"] == "column-fwd+bwd", "rate"].dropna())) if not conv.empty else []
    diffs = [(r, paired_difference(conv, ("topk-fwd+bwd", r), ("column-fwd+bwd", r))) for r in rates]
    diffs = [(r, d) for r, d in diffs if d.n]
    if not diffs:
        return _conv_verdict(*COLUMN_TOPK_CLAIM, Estimate(math.nan, math.nan, math.nan, 0), "", "", size)
    top = diffs[-1][1]
    n = min(d.n for _, d in diffs)
    if any(d.has_interval and d.hi < 0 for _, d in diffs):
        v = "not reproduced"  # TopK better, with confidence, at some rate
    elif all(d.above(-MATCH_GAP) for _, d in diffs) and top.above(0):
        v = "reproduced"
    else:
        v = inconclusive(n)
    measured = "; ".join(f"{r:g}: TopK − column {d.fmt()}" for r, d in diffs)
    rule = (
        f"TopK − column gap > −{MATCH_GAP} at every rate measured and > 0 at the highest (whole intervals); "
        "TopK ahead with confidence at any rate refutes it"
    )
    return _conv_verdict(*COLUMN_TOPK_CLAIM, top, v, rule, size, measured)


def verdicts_at(conv: pd.DataFrame, size: Size) -> list[Verdict]:
    """Every convergence claim judged on the trials of one model size."""
    sel = at_size(conv, size)
    return [_gap_verdict(sel, c, size) for c in GAP_CLAIMS] + [_row_verdict(sel, size), _column_vs_topk(sel, size)]


def convergence_verdicts(tables: Tables) -> list[Verdict]:
    """Per claim, one verdict at each measured size; with several sizes, a headline verdict per
    claim first, naming the largest size at which it was decided, with the trend in words."""
    conv = convergence_trials(tables)
    measured = sizes(conv)
    if not measured:
        why = "no convergence trials in the tables"
        return [Verdict(c, pub, "not measured", "-", "not measured", why) for c, pub in CONVERGENCE_CLAIMS.items()]
    per_size = {size: verdicts_at(conv, size) for size in measured}
    if len(measured) == 1:
        return per_size[measured[0]]
    out = []
    for k, claim in enumerate(CONVERGENCE_CLAIMS):
        by_size = {size: vs[k] for size, vs in per_size.items()}
        out.append(headline(claim, by_size))
        out += [by_size[size] for size in measured]
    return out


def _decided(v: Verdict) -> bool:
    return v.verdict in ("reproduced", "not reproduced")


def headline(claim: str, by_size: dict[Size, Verdict]) -> Verdict:
    """The claim's verdict at the largest size where the data decided it (width first, then
    context), the range of sizes where it held the same, and the trend of its measurement."""
    sizes_ = sorted(by_size, key=lambda s: (s[0], s[1]))
    decided = [s for s in sizes_ if _decided(by_size[s])]
    paper = PAPER_MODEL["d_model"], PAPER_MODEL["ctx"]
    if not decided:
        text = f"inconclusive at every size measured (d ≤ {sizes_[-1][0]})"
    else:
        top = decided[-1]
        word = by_size[top].verdict
        same = [s for s in decided if by_size[s].verdict == word]
        widths = sorted({s[0] for s in same})
        where = f"d ≤ {widths[-1]}" if len(widths) > 1 and len(same) == len(decided) else scale_text(top)
        others = [f"{by_size[s].verdict} at {scale_text(s)}" for s in sizes_ if by_size[s].verdict != word]
        text = f"{word} at {where}" + (f" ({'; '.join(others)})" if others else "")
    if paper not in by_size:
        text += f"; paper size (d={paper[0]}, ctx {paper[1]}) not run"
    first = by_size[sizes_[0]]
    return Verdict(
        claim,
        first.published,
        "; ".join(f"{scale_text(s)}: {by_size[s].measured}" for s in sizes_),
        "-",
        text,
        "headline: the verdict at the largest size where the whole interval decided it; " + first.reason,
        scale=ALL_SIZES,
        explanation=trend_text(by_size),
    )


def trend_text(by_size: dict[Size, Verdict]) -> str:
    """The measurement's trend in words: along width (at the smallest context measured at
    several widths) and along context (at the width measured at several contexts)."""
    parts = []
    for ctx in sorted({c for _, c in by_size}):
        line = sorted((d, v.value) for (d, c), v in by_size.items() if c == ctx and v.value is not None)
        if len(line) > 1:
            parts.append(_trend("width", [f"d={d}" for d, _ in line], [g for _, g in line], f"ctx {ctx}"))
            break
    for d in sorted({d for d, _ in by_size}):
        line = sorted((c, v.value) for (dd, c), v in by_size.items() if dd == d and v.value is not None)
        if len(line) > 1:
            parts.append(_trend("context", [f"ctx {c}" for c, _ in line], [g for _, g in line], f"d={d}"))
            break
    return "; ".join(parts)


def _trend(axis: str, names: list[str], values: list[float], at: str) -> str:
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    how = "falls" if all(x < 0 for x in steps) else "rises" if all(x > 0 for x in steps) else "is not monotone"
    return f"{how} with {axis} ({at}): " + " → ".join(f"{v:+.3f}" for v in values) + f" ({' → '.join(names)})"


# ------------------------------------------------------------------ throughput


def _distributed(tables: Tables, mode: str, device: str | None) -> pd.DataFrame:
    t = tables.ok
    if t.empty or "execution" not in t.columns:
        return t.iloc[0:0]
    d = t[(t["execution"] == "distributed") & (t["mode"] == mode)]
    if device is not None and "device" in d.columns:
        d = d[d["device"] == device]
    for col, value in PAPER_MODEL.items():
        if col in d.columns:
            d = d[d[col] == value]
    return d


def measured_gain(
    tables: Tables, mode: str, label: str, rate: float = 0.9, device: str | None = PAPER_DEVICE
) -> tuple[Estimate, pd.DataFrame] | None:
    """Gain of ``label`` over ``none`` (same mode, device and topology), interval over steps."""
    d = _distributed(tables, mode, device)
    comp = d[(d["compressor"] == label) & ((d["rate"] - rate).abs() < 1e-9)]
    if comp.empty:
        return None
    base = d[(d["compressor"] == "none") & d["topology"].isin(set(comp["topology"]))]
    if base.empty:
        return None
    b = [s for tid in base["trial_id"] for s in step_seconds(tables, tid)]
    c = [s for tid in comp["trial_id"] for s in step_seconds(tables, tid)]
    if not b or not c:  # no step rows: the trials' own throughput, no interval
        g = float(comp["tokens_per_s"].mean() / base["tokens_per_s"].mean())
        return Estimate(g, math.nan, math.nan, 1), comp
    return ratio_interval(b, c), comp


def within_claim(est: Estimate, claim: float) -> str:
    """reproduced / not reproduced (larger|smaller) / inconclusive, by the ±25% rule."""
    lo_ok, hi_ok = (1 - CLAIM_TOLERANCE) * claim, (1 + CLAIM_TOLERANCE) * claim
    lo, hi = (est.lo, est.hi) if est.has_interval else (est.mean, est.mean)
    if lo >= lo_ok and hi <= hi_ok and est.has_interval:
        return "reproduced"
    if lo > hi_ok:
        return "not reproduced (larger)"
    if hi < lo_ok:
        return "not reproduced (smaller)"
    return inconclusive(est.n, "steps")


def explain_training_claim(tables: Tables, claim: float) -> str:
    """Which measured condition could produce the training claim."""
    parts, matching = [], []
    fwd_only = measured_gain(tables, "train", "column-fwd")
    if fwd_only is not None:
        est, comp = fwd_only
        fwd_ratio, _ = wire_ratios(comp)
        bound = gain_bound(fwd_ratio, 1.0)
        parts.append(
            f"forward-only compression (dense gradients, {PAPER_DEVICE}): {est.fmt('.2f', '×')}, "
            f"bound 2/(1+1/{fwd_ratio:.2f}) = {bound:.2f}×"
        )
        if within_claim(est, claim) == "reproduced":
            matching.append("forward-only compression")
    t = tables.ok
    others = (
        sorted(set(t.loc[(t["execution"] == "distributed") & (t["device"] != PAPER_DEVICE), "device"].dropna()))
        if not t.empty and "device" in t.columns and "execution" in t.columns
        else []
    )
    for dev in others:
        got = measured_gain(tables, "train", "column-fwd+bwd", device=dev)
        if got is None:
            continue
        est, _ = got
        parts.append(f"compute-heavier device '{dev}', fwd+bwd: {est.fmt('.2f', '×')}")
        if within_claim(est, claim) == "reproduced":
            matching.append(f"compute-heavier device '{dev}'")
    if not parts:
        return ""
    head = (
        (f"≈{claim:g}× matches " + " and ".join(matching)) if matching else f"no measured condition gives ≈{claim:g}×"
    )
    return head + " — " + "; ".join(parts)


def throughput_verdicts(tables: Tables) -> list[Verdict]:
    out = []
    for name, mode, claim, published in (
        (TRAIN_GAIN, "train", 2.0, "≈2× training throughput at 90% (abstract, §5.3)"),
        (INFER_GAIN, "infer", 12.0, "≈12× inference throughput at 90% (abstract)"),
        (INFER_GAIN_53, "infer", 20.0, "≈20× inference throughput at 90% (§5.3)"),
    ):
        got = measured_gain(tables, mode, "column-fwd+bwd")
        if got is None:
            out.append(
                Verdict(
                    name,
                    published,
                    "not measured",
                    "-",
                    "not measured",
                    f"no none/column-0.9 {mode} pair on the {PAPER_DEVICE} profile in the tables",
                )
            )
            continue
        est, comp = got
        ratio = wire_bound(comp, mode)
        measured = f"{est.fmt('.2f', '×')} (wire ratio {ratio:.2f}×)"
        bound = f"≤ {ratio:.2f}× (wire ratio of the bytes the links carried)"
        if claim > ratio * BOUND_SLACK:
            v, why = (
                "exceeds bound — cannot hold",
                (
                    f"a bandwidth-bound link gains at most the wire ratio {ratio:.2f}× < "
                    f"{claim:g}×; measured {est.mean / ratio:.3f} of the bound"
                ),
            )
        elif est.mean > ratio * BOUND_SLACK:
            v, why = "measurement exceeds bound", "check the setup: the gain is above what the bytes allow"
        else:
            v = within_claim(est, claim)
            why = f"rule: interval within ±{CLAIM_TOLERANCE:.0%} of {claim:g}×; {METHOD_STEPS}"
        explanation = explain_training_claim(tables, claim) if mode == "train" else ""
        out.append(
            Verdict(
                name,
                published,
                measured,
                bound,
                v,
                why,
                est.mean,
                ratio,
                est.lo if est.has_interval else None,
                est.hi if est.has_interval else None,
                est.n,
                explanation,
            )
        )
    return out


def verdicts(tables: Tables) -> list[Verdict]:
    return throughput_verdicts(tables) + convergence_verdicts(tables)
