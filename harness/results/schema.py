"""The rows of the result tables, named once: the executor builds them here, reports read them.

Every trial row has every column of :data:`TRIAL` (None where it does not apply, e.g.
``run_id`` for a twin trial); building one with a key not listed here is an error, so a
new field is added in one place, with its meaning.
"""

from __future__ import annotations

from typing import Any

TRIAL: dict[str, str] = {
    "trial_id": "stable id: hash of the suite's trial config (same config, same id)",
    "suite": "the suite's name",
    "topology": "topology name",
    "shaper": "kernel shaper of the links (tbf | htb)",
    "compressor": "the suite's label of the compressor choice",
    "rate": "compression rate (fraction removed) from the rate axis; None for rate-less compressors",
    "fwd": "forward compressor spec",
    "bwd": "backward compressor spec",
    "direction": "none | fwd | bwd | fwd+bwd: which directions compress",
    "variant": "the set axis' overrides as one label ('' without that axis)",
    "mode": "train | infer",
    "compute": "real | modeled",
    "execution": "twin (single process) | distributed (stages over the emulated links)",
    "backend": "netns | docker for distributed trials",
    "runtime": "pipenem (its own GPipe/1F1B) | torch (torch.distributed.pipelining); twin trials: pipenem",
    "device": "modeled compute: the device profile; real compute: the torch device, e.g. 'cpu (real compute)'",
    "dtype": "float32 | bfloat16 (autocast) of real compute",
    "codec": "real (encode/decode timed on this host) | modeled (bytes touched / the profile's memory bandwidth)",
    "seed": "the run's seed",
    "steps_run": "training/inference steps",
    "target_loss": "the loss time-to-target is measured to",
    "boundary_grad": "exact | straight-through: the gradient through a boundary compressor",
    "grad_clip": "global-norm gradient clip (None: off)",
    "norm_eps": "RMSNorm epsilon",
    "lr": "peak learning rate",
    "warmup": "warm-up steps",
    "lr_schedule": "linear | cosine: the decay after warm-up",
    "optimizer": "adamw | sgd",
    "momentum": "sgd's momentum (None with adamw)",
    "weight_decay": "weight decay (adamw: decoupled; sgd: L2 added to the gradient)",
    "batch": "sequences per step",
    "micro_batches": "micro-batches per step",
    "schedule": "pipeline schedule (gpipe | 1f1b), run by the trial's runtime",
    "model": "builtin (pipenem's Llama-style decoder) | hf:<model type> | factory:<module:function>",
    "d_model": "model width",
    "n_layers": "decoder layers",
    "ctx": "context length (tokens)",
    "dataset": "dataset name",
    "fwd_wire_ratio": "dense / payload bytes of the forward compressor on one boundary micro-batch",
    "bwd_wire_ratio": "the same for the backward compressor (train only)",
    "fwd_link_wire_ratio": "dense / bytes the links carried forward (distributed only)",
    "bwd_link_wire_ratio": "dense / bytes the links carried backward (distributed train only)",
    "wire_bytes_per_token": "interface bytes of all links, both directions, whole run, per token (distributed only)",
    "bubble_fraction": "mean over stages of idle time / step time, steady steps (harness/results/timeline.py)",
    "bubble_by_stage": "the bubble fraction of each stage, as a JSON list",
    "bubble_ideal": "the schedule's ideal bubble with equal stages and free links: (p-1)/(m+p-1)",
    "slow_link": "the link with the lowest planned rate",
    "slow_link_util_fwd": "the slow link's wire bytes / planned bytes while forward data waited to cross it",
    "slow_link_util_bwd": "the same, backward (train only)",
    "tokens_per_s": "throughput: tokens/s, or images/s for an image dataset",
    "throughput_kind": "how tokens_per_s was obtained",
    "initial_loss": "loss of the first step",
    "final_loss": "mean training loss of the last 3 steps",
    "eval_loss": "held-out loss at the end (twin), through the forward compressor",
    "eval_accuracy": "held-out accuracy of the argmax at the end (twin): images, or next tokens",
    "eval_loss_uncompressed": "held-out loss with no compressor at the boundaries (train.eval_uncompressed)",
    "eval_accuracy_uncompressed": "held-out accuracy with no compressor at the boundaries (train.eval_uncompressed)",
    "time_to_target_s": "seconds until the loss first reached target_loss",
    "allocator": "the memory allocator the stage processes ran with",
    "run_id": "testbed run id (distributed only)",
    "status": "ok | failed",
    "error": "why a failed trial failed",
    "wall_s": "wall-clock seconds of the trial",
    "finished_at": "unix time the trial finished",
    "pipenem_version": "the pipenem version that ran it",
    "git_commit": "the checkout's commit it ran from (+dirty: with uncommitted changes); None outside a checkout",
}

LINK: dict[str, str] = {
    "trial_id": "the trial",
    "link": "pipeline link 'i-(i+1)'",
    "direction": "forward | backward",
    "window": "link-plan window index; -1: the whole-run totals row",
    "t_start": "window start (unix time)",
    "t_end": "window end (unix time)",
    "rate_bps": "rate the shaper applied in the window",
    "delay_s": "one-way delay netem applied in the window (0: none)",
    "jitter_s": "delay jitter netem applied in the window (± uniform; packets keep their order unless reorder)",
    "loss_pct": "loss netem applied in the window, percent of this direction's packets",
    "up": "whether the link was up (a planned outage: False)",
    "event": "the topology event that set this window, if any",
    "outside": "what was changed outside pipenem on this link when the window began (the plan says so, then applies)",
    "payload_bytes": "payload bytes the sending stage put on the link",
    "dense_bytes": "what the same tensors weigh uncompressed (totals row)",
    "interface_bytes": "kernel interface counter over the run (totals row): the cross-check",
    "achieved_bps": "payload bytes × 8 / window length",
}

# the trial columns a report's table shows, in order
REPORT_TRIAL_COLUMNS = [
    "trial_id",
    "suite",
    "compressor",
    "rate",
    "direction",
    "variant",
    "model",
    "mode",
    "execution",
    "runtime",
    "backend",
    "compute",
    "device",
    "dtype",
    "codec",
    "boundary_grad",
    "grad_clip",
    "norm_eps",
    "seed",
    "status",
    "initial_loss",
    "final_loss",
    "eval_loss",
    "eval_accuracy",
    "eval_accuracy_uncompressed",
    "tokens_per_s",
    "throughput_kind",
    "fwd_wire_ratio",
    "bwd_wire_ratio",
    "fwd_link_wire_ratio",
    "bwd_link_wire_ratio",
    "wire_bytes_per_token",
    "bubble_fraction",
    "bubble_ideal",
    "slow_link_util_fwd",
    "slow_link_util_bwd",
    "wall_s",
    "error",
]


def run_settings(spec: Any, geometry: Any | None, execution: str, profile: str | None = None) -> dict[str, Any]:
    """The settings that change results, as a trial row (and ``pipenem train``'s summary) records
    them: one definition for every writer. ``spec`` is a RunSpec, ``geometry`` its model's
    (None when the run never got that far, e.g. a failed check), ``execution`` twin or
    distributed (a twin computes for real whatever the spec's compute says), ``profile`` the
    device profile's name of modeled compute."""
    t, c = spec.train, spec.compute
    modeled = c.mode == "modeled" and execution == "distributed"
    g = geometry
    return {
        "execution": execution,
        "compute": "modeled" if modeled else "real",
        "device": (profile or c.profile) if modeled else f"{c.device} (real compute)",
        "runtime": spec.runtime if execution == "distributed" else "pipenem",
        "dtype": c.dtype,
        "codec": c.codec if modeled else "real",
        "boundary_grad": t.boundary_grad,
        "grad_clip": t.grad_clip,
        "norm_eps": g.norm_eps if g else None,
        "lr": t.lr,
        "warmup": t.warmup,
        "lr_schedule": t.lr_schedule,
        "optimizer": t.optimizer,
        "momentum": t.momentum if t.optimizer == "sgd" else None,
        "weight_decay": t.weight_decay,
        "batch": t.batch,
        "micro_batches": t.micro_batches,
        "schedule": t.schedule,
        "model": spec.model.label,
        "d_model": g.d_model if g else None,
        "n_layers": g.n_layers if g else None,
        "ctx": spec.model.ctx,
        "dataset": spec.data.dataset,
        "seed": spec.seed,
    }


def provenance() -> dict[str, Any]:
    """Which pipenem produced a row (every trial and ``pipenem train``'s summary record it)."""
    from basics.provenance import git_commit, version

    return {"pipenem_version": version(), "git_commit": git_commit()}


def _row(columns: dict[str, str], values: dict[str, Any], table: str) -> dict[str, Any]:
    unknown = sorted(set(values) - set(columns))
    if unknown:
        raise KeyError(f"{table} rows have no column {unknown}: add it to harness/results/schema.py")
    return {c: values.get(c) for c in columns}


def trial_row(values: dict[str, Any]) -> dict[str, Any]:
    """A full trial row (every column, in schema order) from the values known."""
    return _row(TRIAL, values, "trials")


def link_row(values: dict[str, Any]) -> dict[str, Any]:
    return _row(LINK, values, "links")
