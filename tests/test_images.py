"""Image models through the harness: the shipped digits, a ResNet split in 4 stages (seed 003's
model, ``papers/mp_compression/resnet.py`` via ``factory:``), SGD with cosine annealing, held-out
accuracy with and without compression at inference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from basics.errors import ConfigError
from harness.config.schema import DataConfig, build_spec
from harness.model.data import eval_batches, load_streams, make_batches
from harness.model.stages import build_stages
from harness.runtime.check import check_run
from harness.runtime.training import lr_at
from harness.runtime.twin import evaluate, run_twin
from tests.conftest import ROOT, TOPOLOGIES, needs_netns, pipenem

TOPO = str(TOPOLOGIES / "ci-4stage.yaml")
RESNET = {
    "factory": "papers.mp_compression.resnet:build_stages",
    "args": {"channels": 8},
    "d_model": 8,
    "n_layers": 4,
    "vocab": 10,
    "ctx": 64,
}
SGD = {
    "steps": 6,
    "batch": 20,
    "micro_batches": 2,
    "optimizer": "sgd",
    "momentum": 0.9,
    "lr": 0.05,
    "warmup": 0,
    "lr_schedule": "cosine",
    "weight_decay": 5e-4,
    "grad_clip": None,
}
DATA = {"dataset": "digits", "eval_fraction": 0.25}


def _spec(**extra: object) -> object:
    base = {"topology": TOPO, "model": RESNET, "data": DATA, "train": SGD}
    return build_spec({**base, **extra})


def test_the_digits_split_is_fixed_and_standardised() -> None:
    train, held = load_streams(DataConfig(**DATA), seed=0)
    train2, held2 = load_streams(DataConfig(**DATA), seed=7)
    assert len(train) + len(held) == 1797 and len(held) == round(1797 * 0.25)
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.float32
    # the held-out images do not depend on the run's seed: seeds vary training, not the test set
    assert torch.equal(held.images, held2.images) and torch.equal(train.labels, train2.labels)
    assert abs(float(train.images.mean())) < 1e-4 and abs(float(train.images.std()) - 1) < 1e-3
    assert set(held.labels.tolist()) == set(range(10))


def test_image_batches_are_seeded_draws_and_evaluation_covers_the_held_out_set() -> None:
    train, held = load_streams(DataConfig(**DATA), seed=0)
    a, b = make_batches(train, 64, 20, seed=3), make_batches(train, 64, 20, seed=3)
    x1, y1 = a.get(5)
    x2, y2 = b.get(5)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (20, 1, 8, 8)
    assert not torch.equal(a.get(6)[1], y1)
    parts = eval_batches(held, 64, 100, seed=0, n=8)
    assert sum(len(y) for _, y in parts) == len(held)  # every held-out image, once
    assert torch.equal(torch.cat([y for _, y in parts]), held.labels)


def test_stages_exchange_positions_by_channels_and_equal_the_whole_network() -> None:
    stages = build_stages(check_run(_spec()).spec.model, [1, 1, 1, 1], seed=2)
    for s in stages:
        s.eval()
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    h = x
    shapes = []
    for s in stages:
        h = s(h)
        shapes.append(tuple(h.shape))
    assert shapes[:-1] == [(3, 64, 8)] * 3 and shapes[-1] == (3, 10)
    whole = build_stages(check_run(_spec(partition=[4, 0, 0, 0])).spec.model, [4, 0, 0, 0], seed=2)
    for s in whole:
        s.eval()
    g = x
    for s in whole:
        g = s(g)
    assert torch.allclose(g, h, atol=1e-5)


def test_cosine_annealing_follows_torchs_schedule() -> None:
    spec = _spec(train={**SGD, "steps": 10, "lr": 0.1})
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for step in range(10):
        assert math.isclose(lr_at(step, spec), opt.param_groups[0]["lr"], rel_tol=1e-9, abs_tol=1e-12)
        opt.step()
        sched.step()


def test_the_resnet_trains_and_reports_accuracy_with_and_without_compression() -> None:
    topk = {"name": "topk", "rate": 0.9}
    train = {**SGD, "steps": 30, "lr": 0.1, "eval_uncompressed": True}
    spec = _spec(train=train, compression={"fwd": topk, "bwd": topk})
    rows = run_twin(spec, eval_batches=8)
    assert rows[-1]["loss"] < rows[0]["loss"]
    last = rows[-1]
    for k in ("eval_accuracy", "eval_accuracy_uncompressed"):
        assert 0.0 <= last[k] <= 1.0
    assert last["eval_accuracy"] > 0.25  # well above chance (0.1) after 30 steps
    # the uncompressed pass really ran without the compressor: another loss
    assert last["eval_loss_uncompressed"] != last["eval_loss"]
    plain = run_twin(_spec(train={**SGD, "eval_uncompressed": True}), eval_batches=8)[-1]
    assert plain["eval_loss_uncompressed"] == plain["eval_loss"]  # no compressor: the same pass


def test_evaluation_uses_running_statistics_and_leaves_them_alone() -> None:
    run = check_run(_spec())
    spec = run.spec
    mods = build_stages(spec.model, run.partition, spec.seed)
    for m in mods:
        m.pipenem_device = torch.device("cpu")
    from harness.runtime.training import BoundaryCodecs

    before = [b.clone() for m in mods for name, b in m.named_buffers() if "running_mean" in name]
    _, held = load_streams(spec.data, spec.seed)
    evaluate(mods, BoundaryCodecs(spec, run.fwd, run.bwd), held, spec, 8)
    after = [b for m in mods for name, b in m.named_buffers() if "running_mean" in name]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(m.training for m in mods)  # back in training mode


@pytest.mark.parametrize(
    "extra,field",
    [
        ({"data": {**DATA, "tokenizer": "tok.json"}}, "data.tokenizer"),
        ({"model": {**RESNET, "vocab": 4}}, "model.vocab"),
        ({"train": {**SGD, "optimizer": "adam"}}, "train.optimizer"),
        ({"train": {**SGD, "momentum": 1.0}}, "train.momentum"),
    ],
)
def test_bad_image_settings_name_their_field(extra: dict, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        check_run(_spec(**extra))
    assert exc.value.field == field, exc.value


def test_the_recipe_is_recorded_per_trial() -> None:
    s = check_run(_spec()).settings("twin")
    assert (s["optimizer"], s["momentum"], s["lr_schedule"], s["weight_decay"]) == ("sgd", 0.9, "cosine", 5e-4)
    assert s["dataset"] == "digits" and check_run(_spec()).tokens_per_step == SGD["batch"]  # images, not positions


@needs_netns
@pytest.mark.netns
@pytest.mark.parametrize("runtime", ["pipenem", "torch"])
def test_the_resnet_over_the_links_equals_the_twin(tmp_path: Path, runtime: str) -> None:
    """4 stages in namespaces over the shaped links, TopK on both directions: the twin's losses."""
    topk = {"name": "topk", "rate": 0.5}
    comp = {"fwd": topk, "bwd": topk} if runtime == "pipenem" else {"fwd": topk, "bwd": "none"}
    train = {**SGD, "steps": 3}
    cfg = tmp_path / "run.yaml"
    body = {"topology": TOPO, "model": RESNET, "data": DATA, "train": train, "compression": comp, "runtime": runtime}
    cfg.write_text(yaml.safe_dump(body))
    r = pipenem("train", str(cfg), "--out", str(tmp_path / "d"), "--quiet", cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    dist = json.loads((tmp_path / "d" / "summary.json").read_text())["losses"]
    twin = [row["loss"] for row in run_twin(_spec(train=train, compression=comp))]
    if runtime == "pipenem":
        assert dist == twin
    else:  # torch's schedule runs the same arithmetic through its own autograd plumbing
        assert dist == pytest.approx(twin, rel=1e-4)
