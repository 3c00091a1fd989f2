"""The report's figures, each saved as a PNG with a caption that says how it was obtained."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reports.stats import ratio_interval, t_interval
from reports.tables import Tables, loss_curves, provenance, smoothed_loss, step_seconds, wire_bound


@dataclass(frozen=True)
class Published:
    """What a paper published, drawn beside the measurements (a paper's report passes one;
    a plain suite's report has none)."""

    name: str  # how captions and legends call it: "Beyond Top-K"
    palette: dict[str, str] = field(default_factory=dict)  # compressor label -> colour
    gains: dict[str, float] = field(default_factory=dict)  # mode -> its claimed throughput gain ...
    gain_of: tuple[str, float] | None = None  # ... for this (compressor label, rate)
    bounds: str = ""  # what the fidelity figure's bound lines are


@dataclass
class Figure:
    name: str
    path: Path
    caption: str


def seed_band(curves: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series, int]:
    """Per step: mean over seeds of each seed's smoothed loss, and its 95% t-interval."""
    per_seed = pd.DataFrame({seed: smoothed_loss(g) for seed, g in curves.groupby("seed")})
    est = [t_interval(list(row.dropna())) for _, row in per_seed.iterrows()]
    idx = per_seed.index
    return (
        pd.Series([e.mean for e in est], idx),
        pd.Series([e.lo for e in est], idx),
        pd.Series([e.hi for e in est], idx),
        per_seed.shape[1],
    )


def _finite(v: object) -> bool:
    return v is not None and bool(np.isfinite(v))


def _colour(label: str, pub: Published | None) -> str | None:
    if label == "none":
        return "black"  # the baseline, in every report
    return pub.palette.get(label) if pub else None


def _save(fig: plt.Figure, out: Path, name: str, caption: str) -> Figure:
    """Lay out, write ``out/NAME.png``, free the figure."""
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Figure(name, path, caption)


def loss_by_rate(tables: Tables, out: Path, pub: Published | None = None) -> Figure | None:
    """Loss vs step, one panel per rate (columns) and model size (rows), the baseline in every panel."""
    curves = loss_curves(tables)
    if curves.empty:
        return None
    curves = curves[curves["mode"] == "train"]
    if "variant" in tables.ok.columns:  # set-axis variants (other steps, other semantics) are not these curves
        default = set(tables.ok.loc[tables.ok["variant"].fillna("") == "", "trial_id"])
        curves = curves[curves["trial_id"].isin(default)]
    if curves.empty:
        return None
    rates = sorted(curves["rate"].dropna().unique()) or [None]
    size_cols = [c for c in ("d_model", "ctx") if c in curves.columns]
    sizes = sorted(curves[size_cols].drop_duplicates().itertuples(index=False, name=None)) if size_cols else [()]
    fig, axes = plt.subplots(
        len(sizes), len(rates), figsize=(5 * len(rates), 3.6 * len(sizes)), sharey="row", squeeze=False
    )
    for row, size in zip(axes, sizes, strict=True):
        at = curves
        for col, v in zip(size_cols, size, strict=True):
            at = at[at[col] == v]
        base = at[at["compressor"] == "none"]
        where = ", ".join(f"{c.replace('d_model', 'd')} {v:g}" for c, v in zip(size_cols, size, strict=True))
        for ax, rate in zip(row, rates, strict=True):
            sel = at[(at["rate"] - rate).abs() < 1e-9] if rate is not None else at
            for label, grp in pd.concat([base, sel]).groupby("compressor", sort=False):
                mean, lo, hi, n = seed_band(grp)
                line = ax.plot(
                    mean.index,
                    mean.values,
                    label=f"{label} (n={n})",
                    color=_colour(label, pub),
                    lw=1.6 if label == "none" else 1.2,
                    ls="--" if label == "none" else "-",
                )[0]
                if n > 1:
                    ax.fill_between(mean.index, lo.values, hi.values, color=line.get_color(), alpha=0.15, lw=0)
            rate_text = f"compression rate {rate:g}" if rate is not None else "all"
            ax.set_title(f"{rate_text}" + (f" ({where})" if len(sizes) > 1 else ""), fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        row[0].set_ylabel("training loss (5-step avg.)")
    fig.suptitle("Convergence under compression (fwd/bwd at every stage boundary), mean ± 95% CI over seeds")
    return _save(
        fig,
        out,
        "loss_by_rate",
        "Training loss vs step per compressor, one panel per rate"
        + (" and model size (rows)" if len(sizes) > 1 else "")
        + ": the mean over seeds of each seed's 5-step moving average, shaded ± its 95% Student-t interval "
        "(n = seeds). " + provenance(tables.ok[tables.ok["mode"] == "train"]),
    )


def _delay_note(tables: Tables, trials: pd.DataFrame) -> str:
    """How delay enters these steps, when the links had any (the wire bound ignores it)."""
    links = tables.links
    if links.empty or "delay_s" not in links.columns:
        return ""
    mine = links[links["trial_id"].isin(set(trials["trial_id"])) & (links["window"] >= 0)]
    top = float(mine["delay_s"].max()) if not mine.empty else 0.0
    if not top > 0:
        return ""
    return (
        f"These links add up to {top * 1e3:g} ms of one-way delay: the bound assumes bandwidth-bound links, "
        "while delay is paid per hop of the schedule's critical path whatever the compression (pipenem's "
        "runtime: 5 one-way delays per message over gloo, consecutive messages 4 apart; "
        "harness/runtime/steptime.py), so gains there sit below it. "
    )


GAIN_GROUP = ("mode", "device", "topology", "d_model", "ctx", "batch")  # a gain compares runs equal in these


def throughput_gain(tables: Tables, out: Path, pub: Published | None = None) -> Figure | None:
    """Throughput gain over no compression of the same mode, device, topology and model, with
    the wire-ratio bound, a 95% bootstrap interval over steps, and the published claims if any."""
    t = tables.ok
    if t.empty:
        return None
    d = t[t["execution"] == "distributed"]
    if d.empty or "none" not in set(d["compressor"]):
        return None
    keys = [k for k in GAIN_GROUP if k in d.columns]
    varying = [k for k in keys if k != "mode" and d[k].nunique() > 1]
    rows = []
    for key, m in d.groupby(keys, dropna=False):
        key = dict(zip(keys, key, strict=True))
        base = m[m["compressor"] == "none"]
        if base.empty:
            continue
        b = [x for tid in base["trial_id"] for x in step_seconds(tables, tid)]
        for (label, rate), g in m[m["compressor"] != "none"].groupby(["compressor", "rate"]):
            c = [x for tid in g["trial_id"] for x in step_seconds(tables, tid)]
            est = ratio_interval(b, c) if b and c else None
            gain = est.mean if est else g["tokens_per_s"].mean() / base["tokens_per_s"].mean()
            where = [str(key[k]) for k in ("device", "topology") if k in varying]
            if {"d_model", "ctx", "batch"} & set(varying):
                where.append(f"d={key.get('d_model')} ctx={key.get('ctx')} b={key.get('batch')}")
            rows.append(
                (
                    key["mode"],
                    "\n".join([f"{label} {rate:g}", *where]),
                    gain,
                    wire_bound(g, key["mode"]),
                    est,
                    pub is not None and (label, rate) == pub.gain_of,
                )
            )
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(7, 1.9 * len(rows)), 5))
    x = np.arange(len(rows))
    ax.bar(
        x,
        [r[2] for r in rows],
        color=["tab:blue" if r[0] == "train" else "tab:purple" for r in rows],
        label="measured gain",
    )
    for xi, r in zip(x, rows, strict=True):
        if r[4] is not None and r[4].has_interval:
            ax.errorbar(xi, r[2], yerr=[[r[2] - r[4].lo], [r[4].hi - r[2]]], color="black", capsize=4, lw=1)
        ax.text(xi, r[2] / 2, f"{r[2]:.2f}×", ha="center", va="center", fontsize=10, color="white", fontweight="bold")
    ax.scatter(x, [r[3] for r in rows], marker="_", s=900, color="black", zorder=3, label="bound: link wire ratio")
    claimed = (
        [(xi, pub.gains[r[0]]) for xi, r in zip(x, rows, strict=True) if r[5] and r[0] in pub.gains] if pub else []
    )
    if claimed:
        ax.scatter(
            *zip(*claimed, strict=True),
            marker="*",
            s=120,
            color="tab:red",
            zorder=3,
            label=f"{pub.name}'s claim for {pub.gain_of[0]} {pub.gain_of[1]:g}",
        )
    ax.set_xticks(x, [f"{r[0]}\n{r[1]}" for r in rows], fontsize=7)
    ax.set_ylabel("throughput gain over no compression (×)")
    ax.set_title("Throughput gain (tokens/s, pipeline over emulated links)")
    ax.legend(fontsize=8, loc="upper right")
    tops = [v for v in [r[2] for r in rows] + [r[3] for r in rows] + [c for _, c in claimed] if _finite(v)]
    ax.set_ylim(0, max(tops, default=1.0) * 1.25)  # a trial without measured wire ratios has no bound
    ax.grid(axis="y", alpha=0.3)
    return _save(
        fig,
        out,
        "throughput_gain",
        "Measured throughput gain over no compression with the same mode, device, "
        "topology and model, with its 95% bootstrap interval over steps, beside the bound a bandwidth-bound link "
        "allows (the wire ratio of the bytes the links carried)"
        + (f" and {pub.name}'s claims" if claimed else "")
        + ". "
        + _delay_note(tables, d)
        + provenance(d),
    )


SAME_RUN = ("d_model", "n_layers", "ctx", "batch", "micro_batches", "boundary_grad")  # what must match to combine


def time_to_target(tables: Tables, out: Path, pub: Published | None = None) -> Figure | None:
    """Time to the baseline's loss: steps needed (twin, mean over seeds) × seconds per step
    measured over the links for the same model, batch and compressor."""
    conv, t = loss_curves(tables), tables.ok
    if conv.empty or t.empty or not set(SAME_RUN) <= set(t.columns):
        return None
    twins = t[(t["mode"] == "train") & (t["execution"] == "twin")]
    dist = t[(t["execution"] == "distributed") & (t["mode"] == "train")]
    conv = conv[(conv["mode"] == "train") & (conv["execution"] == "twin")]
    if twins.empty or dist.empty or conv.empty:
        return None
    base = smoothed_loss(conv[conv["compressor"] == "none"])
    if base.empty:
        return None
    target = float(base.iloc[int(len(base) * 0.8)])
    rows, used = [], []
    for (label, rate), g in conv.groupby(["compressor", "rate"], dropna=False):
        cfg = twins[twins["trial_id"].isin(set(g["trial_id"]))].iloc[0]
        same = dist[(dist["compressor"] == label) & ((dist["rate"] == rate) | (dist["rate"].isna() & pd.isna(rate)))]
        for col in SAME_RUN:
            same = same[same[col].astype(str) == str(cfg[col])]
        if same.empty:
            continue
        secs = [x for tid in same["trial_id"] for x in step_seconds(tables, tid)]
        curve = smoothed_loss(g)
        hit = curve[curve <= target]
        total = (hit.index[0] + 1) * float(np.mean(secs)) if not hit.empty and secs else None
        rows.append(
            (label if label == "none" else f"{label} {rate:g}", total, None if hit.empty else int(hit.index[0]) + 1)
        )
        used.append(same)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.barh(
        [r[0] for r in rows],
        [r[1] or 0 for r in rows],
        color=["tab:gray" if r[1] is None else "tab:blue" for r in rows],
    )
    for b, r in zip(bars, rows, strict=True):
        ax.text(
            b.get_width(),
            b.get_y() + b.get_height() / 2,
            " not reached" if r[1] is None else f" {r[1]:.1f} s ({r[2]} steps)",
            va="center",
            fontsize=9,
        )
    ax.set_xlabel(f"projected seconds to loss {target:.3f} (baseline at 80% of its run)")
    ax.set_title("Time to target loss")
    return _save(
        fig,
        out,
        "time_to_target",
        "Projected time to reach the baseline's loss: steps the single-process twin "
        "needed (mean curve over seeds) × seconds per step measured over the emulated links for the same model, "
        f"batch, partition and compressor (matched on {', '.join(SAME_RUN)}). Throughput alone hides that a "
        "compressed run may need more steps. A projection from two runs, not one measured run. "
        + provenance(pd.concat(used)),
    )


def bytes_per_link(tables: Tables, out: Path, pub: Published | None = None) -> list[Figure]:
    """One picture per topology: links of different networks never share a bar group."""
    lk, t = tables.links, tables.ok
    if lk.empty or t.empty:
        return []
    tot = lk[lk["window"] == -1].merge(t[["trial_id", "compressor", "rate", "mode", "topology"]], on="trial_id")
    tot["trial"] = (
        tot["compressor"] + " " + tot["rate"].map(lambda r: "" if pd.isna(r) else f"{r:g}") + " " + tot["mode"]
    )
    figs = []
    for topo in sorted(tot["topology"].unique()):
        mine = tot[tot["topology"] == topo]
        piv = mine.pivot_table(index=["link", "direction"], columns="trial", values="payload_bytes", aggfunc="sum")
        fig, ax = plt.subplots(figsize=(8, 4))
        piv.plot.bar(ax=ax, logy=True)
        ax.set_ylabel("payload bytes sent (log)")
        ax.set_xlabel("link, direction")
        ax.set_title(f"Bytes per link and direction, topology {topo}")
        ax.legend(fontsize=7)
        figs.append(
            _save(
                fig,
                out,
                "bytes_per_link_" + re.sub(r"[^\w.-]", "_", str(topo)),
                f"Payload bytes each link of topology {topo} carried per trial, counted from the payloads (the "
                "interface counters agree within the overhead in the links table). "
                + provenance(t[t["trial_id"].isin(set(mine["trial_id"]))]),
            )
        )
    return figs


GANTT_COLOURS = {"fwd": "#4c72b0", "bwd": "#dd8452", "encode": "#55a868", "decode": "#8fd19e", "optim": "#8172b3"}


def steady_step(spans: pd.DataFrame) -> int:
    """The step a Gantt picture shows: the middle one of those after the warm-up step."""
    steps = sorted(spans["step"].unique())
    steady = steps[1:] or steps
    return int(steady[len(steady) // 2])


def gantt_axes(ax: plt.Axes, spans: pd.DataFrame, step: int) -> bool:
    """Draw step ``step`` of ``spans`` on ``ax``: stages as rows, compute and codec as bars,
    payload arrivals as thin grey lines; False when the step has nothing to draw."""
    s = spans[spans["step"] == step]
    busy = s[s["kind"].isin(list(GANTT_COLOURS))]
    if busy.empty:
        return False
    t0 = busy["t0"].min()
    stages = sorted(s["stage"].unique())
    for r in s.itertuples(index=False):
        y = r.stage
        if r.kind in GANTT_COLOURS:
            ax.barh(y, (r.t1 - r.t0) * 1e3, left=(r.t0 - t0) * 1e3, height=0.6, color=GANTT_COLOURS[r.kind])
            if r.kind in ("fwd", "bwd") and pd.notna(r.micro):
                ax.text(
                    ((r.t0 + r.t1) / 2 - t0) * 1e3, y, f"{'F' if r.kind == 'fwd' else 'B'}{int(r.micro)}",
                    ha="center", va="center", fontsize=7, color="white",
                )  # fmt: skip
        elif r.kind == "arrive":
            ax.barh(y + 0.38, (r.t1 - r.t0) * 1e3, left=(r.t0 - t0) * 1e3, height=0.12, color="#999999")
    ax.set_yticks(stages, [f"stage {i}" for i in stages])
    ax.invert_yaxis()
    ax.set_xlabel(f"ms into step {step}")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in GANTT_COLOURS.values()]
    handles.append(plt.Rectangle((0, 0), 1, 1, color="#999999"))
    ax.legend(
        handles, [*GANTT_COLOURS, "payload arriving"], fontsize=7, ncol=6, loc="upper center",
        bbox_to_anchor=(0.5, -0.25 - 0.3 / len(stages)),
    )  # fmt: skip
    return True


GANTT_NOTE = (
    "what each stage did when, from its recorded spans (F/B = forward/backward of micro-batch N, on the "
    "stages' shared monotonic clock); white space is bubble (waiting for a payload, a send window or "
    "the gradient-norm sum); the grey line above a row is a payload arriving. "
    "`pipenem trace` gives the whole run for Perfetto."
)


def gantt(tables: Tables, out: Path, pub: Published | None = None) -> list[Figure]:
    """One picture per distributed trial with a timeline: one steady step, stages as rows."""
    t = tables.ok
    if t.empty or "execution" not in t.columns:
        return []
    figs = []
    for row in t[t["execution"] == "distributed"].itertuples(index=False):
        spans = tables.timeline("spans", row.trial_id)
        if spans.empty:
            continue
        step = steady_step(spans)
        fig, ax = plt.subplots(figsize=(10, 1.1 + 0.55 * spans["stage"].nunique()))
        if not gantt_axes(ax, spans, step):
            plt.close(fig)
            continue
        rate = "" if pd.isna(row.rate) else f" {row.rate:g}"
        bubble = (
            "" if pd.isna(row.bubble_fraction) else f"; bubble {row.bubble_fraction:.2f} (ideal {row.bubble_ideal:.2f})"
        )
        ax.set_title(f"{row.compressor}{rate} {row.mode}, {row.schedule}, runtime {row.runtime}{bubble}", fontsize=9)
        figs.append(
            _save(
                fig,
                out,
                f"gantt_{row.trial_id}",
                f"One steady step (step {step}) of trial {row.trial_id} ({row.compressor}{rate}, {row.mode}): "
                + GANTT_NOTE
                + " "
                + provenance(t[t["trial_id"] == row.trial_id]),
            )
        )
    return figs


def bandwidth_applied(tables: Tables, out: Path, pub: Published | None = None) -> Figure | None:
    lk = tables.links
    if lk.empty:
        return None
    w = lk[lk["window"] >= 0]
    if w.empty:
        return None
    trial = w["trial_id"].iloc[0]
    w = w[w["trial_id"] == trial]
    t0 = w["t_start"].min()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for (link, direction), g in w.groupby(["link", "direction"]):
        g = g.sort_values("t_start")
        xs = list(g["t_start"] - t0) + [g["t_end"].iloc[-1] - t0]
        ys = list(g["rate_bps"] / 1e6) + [g["rate_bps"].iloc[-1] / 1e6]
        line = ax.step(xs, ys, where="post", label=f"{link} {direction}")[0]
        if "up" in g.columns:  # planned outages (topology events): shaded, the link carries nothing
            for _, row in g[g["up"] == False].iterrows():  # noqa: E712 - a column of bools
                ax.axvspan(row["t_start"] - t0, row["t_end"] - t0, color=line.get_color(), alpha=0.15, lw=0)
                ax.text(row["t_start"] - t0, ax.get_ylim()[0], f" {link} down", fontsize=7, color=line.get_color())
    ax.set_yscale("log")
    ax.set_xlabel("seconds since bring-up")
    ax.set_ylabel("bandwidth applied (Mbit/s, log)")
    ax.set_title(f"Bandwidth the link plan applied (trial {trial})")
    ax.legend(fontsize=7, ncol=2)
    row = tables.trials[tables.trials["trial_id"] == trial]
    return _save(
        fig,
        out,
        "bandwidth_applied",
        "Per-link bandwidth as applied by the seeded link plan (recorded at each "
        "change, not the configured distribution); shaded spans are planned outages (topology events). "
        + provenance(row),
    )


def fidelity(tables: Tables, out: Path, pub: Published | None = None) -> Figure | None:
    f = tables.fidelity
    if f.empty:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.5))
    colours = {"column": "tab:blue", "row": "tab:green", "topk": "tab:red"}
    markers = {}
    for (source, name), g in f.groupby(["source", "compressor_name"]):
        g = g.sort_values("rate")
        mk = markers.setdefault(source, "os^"[len(markers) % 3])
        ax.plot(g["rate"], g["sin_theta"], marker=mk, color=colours.get(name), label=f"{name}, measured — {source}")
        if g["bound"].notna().any():
            ax.plot(
                g["rate"],
                g["bound"],
                ls=":",
                marker=mk,
                ms=3,
                color=colours.get(name),
                label=f"{name}, bound — {source}",
            )
    ax.set_yscale("log")
    ax.set_xlabel("compression rate x (fraction removed)")
    ax.set_ylabel("‖sin Θ(U_r, Ũ_r)‖_F (log)")
    ax.set_title("Subspace error" + (f" vs {pub.name}'s bounds" if pub else ""))
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    ax.grid(alpha=0.3)
    r = int(f["r"].iloc[0])
    return _save(
        fig,
        out,
        "fidelity",
        f"Measured ‖sin Θ‖_F of the top-{r} left singular subspace vs rate"
        + (f", beside {pub.bounds}" if pub and pub.bounds else "")
        + ". Sources: "
        + ", ".join(sorted(set(f["source"]))),
    )


def gap_by_scale(tables: Tables, out: Path, pub: Published | None = None) -> Figure | None:
    """Gap vs model width, one line per compressor configuration, 95% intervals as bands; other
    contexts as separate markers. Only for tables with convergence runs at several sizes."""
    from reports.summary import convergence_summary

    conv = convergence_summary(tables)
    if conv.empty or "d_model" not in conv.columns:
        return None  # the summary keys by width only where widths differ
    if "ctx" not in conv.columns:  # one context for all: the trials' own
        conv["ctx"] = tables.ok["ctx"].dropna().iloc[0] if "ctx" in tables.ok.columns else 0
    if "variant" in conv.columns:
        conv = conv[conv["variant"].fillna("") == ""]
    conv = conv[conv["compressor"] != "none"].copy()
    for col in ("d_model", "ctx"):  # summary keys are labels: sizes as numbers again
        conv[col] = pd.to_numeric(conv[col], errors="coerce")
    conv = conv.dropna(subset=["d_model", "ctx"])
    if conv[["d_model", "ctx"]].drop_duplicates().shape[0] < 2:
        return None
    widths_at = conv.groupby("ctx")["d_model"].nunique()
    line_ctx = widths_at.idxmax()  # the context measured at the most widths: the lines
    fig, ax = plt.subplots(figsize=(8, 4.8))
    styles = {r: st for r, st in zip(sorted(conv["rate"].dropna().unique()), ("-", "--", ":", "-."), strict=False)}
    for (label, rate), g in conv.groupby(["compressor", "rate"], dropna=False, sort=True):
        name = f"{label} {rate:g}" if rate == rate else label
        line = g[g["ctx"] == line_ctx].sort_values("d_model")
        if line.empty:
            continue
        drawn = ax.plot(
            line["d_model"], line["gap"], marker="o", label=name, color=_colour(label, pub), ls=styles.get(rate, "-")
        )[0]
        ax.fill_between(line["d_model"], line["gap_lo"], line["gap_hi"], color=drawn.get_color(), alpha=0.12, lw=0)
        for _, r in g[g["ctx"] != line_ctx].iterrows():
            ax.errorbar(
                r["d_model"],
                r["gap"],
                yerr=[[r["gap"] - r["gap_lo"]], [r["gap_hi"] - r["gap"]]],
                fmt="s",
                mfc="none",
                color=drawn.get_color(),
                capsize=3,
            )
    ax.axhline(0.05, color="grey", ls=":", lw=1)
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(conv["d_model"].unique()), [str(int(d)) for d in sorted(conv["d_model"].unique())])
    ax.set_xlabel("model width d (log scale)")
    ax.set_ylabel("gap (fraction of the baseline's loss drop lost)")
    ax.set_title(f"Convergence gap vs model size (lines: ctx {int(line_ctx)}; open squares: other contexts)")
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    ax.grid(alpha=0.3)
    others = sorted({int(c) for c in conv["ctx"].unique()} - {int(line_ctx)})
    return _save(
        fig,
        out,
        "gap_by_scale",
        f"Gap of each compressor configuration vs model width at ctx {int(line_ctx)} (lines, mean over seeds, "
        "shaded its 95% Student-t interval over seeds; each point against the same-size, same-seed baseline)"
        + (f"; open squares: ctx {', '.join(map(str, others))} with 95% intervals" if others else "")
        + "; dotted: the 0.05 'matches the baseline' threshold. Measured points only, nothing fitted. "
        + provenance(tables.ok[tables.ok["mode"] == "train"]),
    )


ALL = (loss_by_rate, gap_by_scale, throughput_gain, time_to_target, bandwidth_applied, fidelity)
MANY = (bytes_per_link, gantt)  # each gives a list: one picture per topology, per trial


def render_all(tables: Tables, out: Path, pub: Published | None = None) -> list[Figure]:
    out.mkdir(parents=True, exist_ok=True)
    figs = [fig for make in ALL if (fig := make(tables, out, pub)) is not None]
    return figs + [fig for make in MANY for fig in make(tables, out, pub)]
