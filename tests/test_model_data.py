"""Model, partition, schedules, datasets (no network)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from basics.errors import ConfigError
from harness.config.schema import DataConfig, ModelConfig, nearest_valid_heads
from harness.model.data import Batches, load_streams
from harness.model.stages import build_stages
from harness.model.tokenizer import ByteTokenizer
from harness.runtime.pipeline import backward_order, gpipe, one_f_one_b


def test_paper_heads_are_replaced_by_the_nearest_valid_count() -> None:
    cfg, note = ModelConfig.paper()
    assert nearest_valid_heads(512, 24) == 16 and cfg.n_heads == 16
    assert "24" in note and "16" in note
    with pytest.raises(ValueError, match="does not divide"):
        ModelConfig(d_model=512, n_heads=24)


def test_stages_split_the_same_model_and_compose() -> None:
    cfg = ModelConfig(d_model=32, n_layers=4, n_heads=4, ctx=16)
    whole = build_stages(cfg, [4], seed=1)[0]
    parts = build_stages(cfg, [1, 2, 0, 1], seed=1)
    x = torch.randint(0, 256, (2, 16))
    h = x
    for p in parts:
        h = p(h)
    assert torch.equal(h, whole(x))
    assert parts[0].embed is not None and parts[-1].head is not None and len(parts[2].blocks) == 0


def test_attention_is_causal() -> None:
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, ctx=16)
    m = build_stages(cfg, [2], seed=0)[0]
    x = torch.randint(0, 256, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 256
    assert torch.allclose(m(x)[0, :10], m(y)[0, :10], atol=1e-6)
    assert not torch.allclose(m(x)[0, 10:], m(y)[0, 10:])


@pytest.mark.parametrize("stages,micro", [(2, 4), (4, 4), (4, 8), (8, 3)])
def test_schedules_run_every_action_once_in_a_valid_order(stages: int, micro: int) -> None:
    for sched in (gpipe, one_f_one_b):
        for s in range(stages):
            acts = sched(stages, micro, s)
            assert sorted(acts) == sorted([("F", m) for m in range(micro)] + [("B", m) for m in range(micro)])
            assert all(acts.index(("F", m)) < acts.index(("B", m)) for m in range(micro))
    assert backward_order("gpipe", 4) == [3, 2, 1, 0] and backward_order("1f1b", 4) == [0, 1, 2, 3]
    in_flight = max(
        sum(1 for a in one_f_one_b(stages, micro, 0)[:k] if a[0] == "F")
        - sum(1 for a in one_f_one_b(stages, micro, 0)[:k] if a[0] == "B")
        for k in range(2 * micro)
    )
    assert in_flight <= min(stages, micro)  # 1F1B bounds the activations a stage holds


def test_synthetic_and_stdlib_datasets_are_seeded_text() -> None:
    a, _ = load_streams(DataConfig(dataset="synthetic"), seed=0)
    b, _ = load_streams(DataConfig(dataset="synthetic"), seed=0)
    c, _ = load_streams(DataConfig(dataset="synthetic"), seed=1)
    assert torch.equal(a, b) and not torch.equal(a[:1000], c[:1000])
    tr, ev = load_streams(DataConfig(dataset="pystdlib"), seed=0)
    assert tr.numel() > 1_000_000 and ev.numel() > 10_000
    assert "def " in ByteTokenizer.decode(tr[:20000])


def test_batches_are_reproducible_windows() -> None:
    stream = torch.arange(1000, dtype=torch.int64) % 256
    b = Batches(stream.to(torch.uint8), ctx=8, batch=3, seed=5)
    x, y = b.get(7)
    x2, _ = b.get(7)
    assert torch.equal(x, x2) and x.shape == (3, 8) and torch.equal(x[:, 1:], y[:, :-1])


def test_c4_shards_load_with_datasets(tmp_path: Path) -> None:
    pytest.importorskip(
        "datasets", reason="the c4 loader needs the optional `datasets` package (pipenem[data]; tox installs it)"
    )
    shard = tmp_path / "c4-train.00000-of-01024.json.gz"
    with gzip.open(shard, "wt") as fh:
        for i in range(40):
            fh.write(
                json.dumps(
                    {
                        "text": f"Document {i}: the quick brown fox {i} jumps.",
                        "timestamp": "2019-04-25T12:57:54Z",
                        "url": f"https://example.com/{i}",
                    }
                )
                + "\n"
            )
    tr, ev = load_streams(DataConfig(dataset="c4", paths=[str(tmp_path / "*.json.gz")], eval_fraction=0.1), seed=0)
    assert "Document 0:" in ByteTokenizer.decode(tr) and "Document 39:" in ByteTokenizer.decode(ev)


def test_text_dataset_needs_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_streams(DataConfig(dataset="text", paths=[str(tmp_path / "none*.txt")]), seed=0)
    assert info.value.field == "data.paths"
    (tmp_path / "a.txt").write_text("hello world " * 100)
    tr, ev = load_streams(DataConfig(dataset="text", paths=[str(tmp_path / "*.txt")]), seed=0)
    assert tr.numel() + ev.numel() == 1200


def test_gradient_clipping_uses_the_whole_models_norm_across_stages() -> None:
    """Stages add their squared norms in pipeline order and each clips by the total: the
    same gradients as torch's clip_grad_norm_ over the unsplit model (a per-stage clip differs)."""
    from harness.runtime.training import clip_to_norm, grad_sq_norm

    torch.manual_seed(0)
    stages = [torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)]
    ref = [torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)]  # the unsplit model: same weights
    for a, b in zip(stages, ref, strict=True):
        b.load_state_dict(a.state_dict())
    x = torch.randn(16, 8)
    for mods in (stages, ref):
        (mods[1](torch.relu(mods[0](x))) ** 2).sum().backward()
    params = [p for m in stages for p in m.parameters()]
    whole = torch.nn.utils.clip_grad_norm_([p for m in ref for p in m.parameters()], 0.5)
    expected = [p.grad for m in ref for p in m.parameters()]
    total = grad_sq_norm(stages[0]) + grad_sq_norm(stages[1])
    assert float(total.sqrt()) == pytest.approx(float(whole), rel=1e-6) and float(whole) > 0.5
    per_stage = [torch.sqrt(grad_sq_norm(m)) for m in stages]
    assert all(float(n) < float(whole) for n in per_stage)  # a per-stage clip would scale differently
    for m in stages:
        clip_to_norm(m, 0.5, total)
    assert all(torch.allclose(p.grad, e, rtol=1e-6, atol=1e-8) for p, e in zip(params, expected, strict=True))
    assert float(torch.sqrt(grad_sq_norm(stages[0]) + grad_sq_norm(stages[1]))) == pytest.approx(0.5, rel=1e-5)
