"""``runtime: torch``: torch.distributed.pipelining's schedules over the same shaped links,
against pipenem's runtime on the same model, data and seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from basics.errors import ConfigError
from harness.compressors import build
from harness.compressors.base import Context
from harness.config.schema import build_spec
from harness.runtime.check import check_run
from harness.runtime.launcher import run_pipeline
from harness.runtime.torch_stage import _Encode, as_payload
from harness.sweep.suite import load_suite
from testbed.registry import all_records
from tests.conftest import TINY_RUN, TOPOLOGIES, needs_netns, netns_names, pipenem, with_overrides

BASE = with_overrides(TINY_RUN, train={"steps": 5})


def _spec(**over) -> dict:
    return with_overrides(BASE, **over)


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"compression": {"fwd": "none", "bwd": {"name": "topk", "rate": 0.5}}}, "compression.bwd", "mirror"),
        ({"compression": {"fwd": {"name": "quantize", "bits": 4}}}, "compression.fwd", "kept mask"),
        ({"compute": {"mode": "modeled", "codec": "modeled"}}, "compute.codec", "codec time is real"),
        ({"compute": {"device": "cuda"}}, "compute.device", "gloo"),
        ({"train": {"schedule": "interleaved-1f1b"}}, "train.schedule", "no such link"),
        ({"backend": "twin"}, "runtime", "distributed"),
        (
            {"compression": {"fwd": {"name": "topk", "rate": 0.5}}, "train": {"boundary_grad": "straight-through"}},
            "train.boundary_grad",
            "dense gradient",
        ),
    ],
)
def test_what_torch_runtime_cannot_run_is_refused_naming_the_field(over: dict, field: str, words: str) -> None:
    spec = build_spec(_spec(runtime="torch", **over))
    with pytest.raises(ConfigError) as err:
        check_run(spec)
    assert err.value.field == field and words in err.value.message


def test_interleaved_schedules_are_refused_for_pipenem_runtime_too() -> None:
    with pytest.raises(ConfigError, match="no such link"):
        check_run(build_spec(_spec(train={"schedule": "looped-bfs"})))


@pytest.mark.parametrize(
    "fwd",
    [
        "none",
        {"name": "topk", "rate": 0.7},
        {"name": "column", "rate": 0.5},
        {"name": "row", "rate": 0.5},
        {"name": "randk", "rate": 0.5, "scale": True},
    ],
)
def test_in_graph_encode_is_the_exact_boundary_jacobian(fwd) -> None:
    """The sender's backward places the values' gradient at the kept mask; composed with autograd
    through decode this is pipenem's ``boundary_grad: exact`` (the compressor's vjp), bit for bit."""
    codec = build(fwd)
    ctx = Context(boundary=0, direction="forward", step=3, seed=1, state={})
    x = torch.randn(2, 16, 8, requires_grad=True)
    parts = _Encode.apply(x, codec, ctx)
    values = parts[0]
    payload = codec.encode(x.detach(), ctx)
    assert torch.equal(values, payload.parts[0])
    leaf = values.detach().requires_grad_(True)
    decoded = codec.decode(as_payload((leaf, *parts[1:])), ctx)
    g = torch.randn_like(decoded)
    decoded.backward(g)  # what the receiver's autograd sends back: the values' gradient
    values.backward(leaf.grad)
    assert torch.equal(x.grad, codec.vjp(g, payload, ctx))


def test_runtime_axis_expands_distributed_trials_only(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(
        f"name: rt\ntopology: {TOPOLOGIES / 'ci-4stage.yaml'}\n"
        "base: {model: {d_model: 32, n_layers: 4, n_heads: 4, ctx: 32}, train: {steps: 2, batch: 8}}\n"
        "axes: {execution: [twin, distributed], runtime: [pipenem, torch]}\n"
    )
    _, trials = load_suite(suite)
    assert sorted((t.execution, t.runtime) for t in trials) == [
        ("distributed", "pipenem"),
        ("distributed", "torch"),
        ("twin", "pipenem"),
    ]
    pipenem_ids = {t.trial_id for t in trials if t.runtime == "pipenem"}
    no_axis = suite.read_text().replace(", runtime: [pipenem, torch]", "")
    suite.write_text(no_axis)
    assert {t.trial_id for t in load_suite(suite)[1]} == pipenem_ids  # ids from before the axis still resume
    suite.write_text(
        no_axis.replace(
            "execution: [twin, distributed]",
            "runtime: [torch], compressor: [{label: tk, bwd: {name: topk, rate: 0.5}}]",
        )
    )
    with pytest.raises(ConfigError) as err:
        load_suite(suite)
    assert err.value.field.startswith("axes.runtime[torch] with compression.bwd")


@needs_netns
@pytest.mark.netns
def test_torch_runtime_equals_pipenem_runtime_and_its_bytes_cross_the_shaped_links(tmp_path: Path) -> None:
    """With `none` and 1F1B (both runtimes back-propagate micro-batches in the same order, and
    the loss is divided by M before backward in both) the losses are equal bit for bit; GPipe
    (torch: backward in micro-batch order, pipenem: reversed, as Huang et al.) sums the
    parameter gradients in another order: equal within 1e-5 relative."""
    for schedule, exact in (("1f1b", True), ("gpipe", False)):
        ours = run_pipeline(build_spec(_spec(train={"schedule": schedule})), tmp_path / f"p-{schedule}")
        theirs = run_pipeline(
            build_spec(_spec(runtime="torch", train={"schedule": schedule})), tmp_path / f"t-{schedule}"
        )
        a, b = ours.losses(), theirs.losses()
        assert len(b) == 5 and b[-1] < b[0] - 0.3  # it learns
        if exact:
            assert a == b
        else:
            assert b == pytest.approx(a, rel=1e-5) and a != [b[0]] * len(a)
    # every byte torch's schedule sent crossed the link it was meant for: the interface counters
    # carry exactly the payloads plus TCP/IP overhead; forward = activations + a shape header,
    # backward = their gradients, + the 8-byte gradient-norm messages
    mb = 8 // 4 * 32 * 32 * 4
    header = 8 * 5  # int64 header tensor: dtype code, rank, 3 dims
    for row in theirs.links:
        per = mb + header if row["direction"] == "forward" else mb
        assert row["payload_bytes"] == 5 * (4 * per + 8), row
        assert row["dense_bytes"] == 5 * 4 * mb
        assert 1.0 < row["overhead"] < 1.2, row
    assert not {n for n in netns_names() if n.startswith(theirs.run_id)}
    assert not list((tmp_path / "t-gpipe").glob("torch-store-*"))  # the rendezvous file is gone
    assert all_records() == []


@needs_netns
@pytest.mark.netns
def test_torch_runtime_with_topk_equals_pipenem_with_mirror_and_sends_kept_values_only(tmp_path: Path) -> None:
    """In-graph TopK: the gradient goes back as the kept values' gradient, which is pipenem's
    `bwd: mirror` (values at the forward's kept positions) under exact boundary gradients."""
    topk = {"name": "topk", "rate": 0.75}
    ours = run_pipeline(
        build_spec(_spec(train={"schedule": "1f1b"}, compression={"fwd": topk, "bwd": "mirror"})), tmp_path / "p"
    )
    theirs = run_pipeline(
        build_spec(_spec(runtime="torch", train={"schedule": "1f1b"}, compression={"fwd": topk})), tmp_path / "t"
    )
    assert theirs.losses() == pytest.approx(ours.losses(), rel=1e-6)
    kept = 8 // 4 * 32 * 32 // 4  # values per micro-batch
    for row in theirs.links:
        if row["direction"] == "backward":
            assert row["payload_bytes"] == 5 * (4 * kept * 4 + 8), row
        assert 1.0 < row["overhead"] < 1.6, row  # three small tensors per message: gloo + TCP/IP per message
    # both runtimes carry the same values backward; pipenem adds its 16-byte frame and header
    for a, b in zip(ours.links, theirs.links, strict=True):
        if a["direction"] == "backward":
            assert 0 < a["payload_bytes"] - b["payload_bytes"] < 5 * 4 * 100


@needs_netns
@pytest.mark.netns
def test_runtime_torch_from_the_cli_records_the_runtime(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(
        f"name: rt\ntopology: {TOPOLOGIES / 'ci-4stage.yaml'}\n"
        "base: {model: {d_model: 32, n_layers: 4, n_heads: 4, ctx: 32}, data: {dataset: synthetic},"
        " train: {steps: 3, batch: 8, warmup: 1}}\n"
        "axes: {compressor: [{label: col, fwd: {name: column, rate: 0.5}}], runtime: [pipenem, torch]}\n"
    )
    out = tmp_path / "out"
    res = pipenem("run", str(suite), "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    import pandas as pd

    trials = pd.read_parquet(out / "trials.parquet")
    assert sorted(trials["runtime"]) == ["pipenem", "torch"] and set(trials["status"]) == {"ok"}
    assert trials["tokens_per_s"].gt(0).all()


@needs_netns
@pytest.mark.netns
def test_torch_runtime_serves_inference_and_trains_a_transformers_model_like_pipenem(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="hf models come with pipenem[hf]")
    infer = {"train": {"mode": "infer", "steps": 3}, "compression": {"fwd": {"name": "topk", "rate": 0.5}}}
    ours = run_pipeline(build_spec(_spec(**infer)), tmp_path / "pi")
    theirs = run_pipeline(build_spec(_spec(runtime="torch", **infer)), tmp_path / "ti")
    assert theirs.losses() == ours.losses()  # forward only: the same numbers
    assert all(row["payload_bytes"] == 0 for row in theirs.links if row["direction"] == "backward")
    gpt2 = {"hf": "gpt2", "config": {"n_embd": 32, "n_layer": 4, "n_head": 4, "vocab_size": 256}, "ctx": 32}
    a = run_pipeline(build_spec({**_spec(train={"schedule": "1f1b", "steps": 3}), "model": gpt2}), tmp_path / "ph")
    b = run_pipeline(
        build_spec({**_spec(runtime="torch", train={"schedule": "1f1b", "steps": 3}), "model": gpt2}), tmp_path / "th"
    )
    a, b = a.losses(), b.losses()
    assert a == b and len(b) == 3


def test_a_plug_in_that_breaks_in_graph_assumptions_is_named() -> None:
    """A `jacobian = "mask"` compressor whose values are not the input at its mask would get
    wrong gradients under runtime: torch; one whose payload changes size would fail in gloo.
    Both are said by name at the first forward."""
    from torch import nn

    from harness.compressors.sparse import TopK
    from harness.runtime.torch_stage import CompressedStage
    from harness.runtime.training import BoundaryCodecs

    spec = build_spec(_spec(runtime="torch", compression={"fwd": {"name": "topk", "rate": 0.5}}))
    x = torch.randn(2, 32, 32)
    stage = CompressedStage(nn.Identity(), spec, BoundaryCodecs.built(spec), 0, 4)
    stage.expected = [t.shape for t in stage(x)]  # topk itself passes
    stage.expected = [torch.Size([1])] + stage.expected[1:]
    with pytest.raises(RuntimeError, match="fixed-size payloads"):
        stage(x)

    class Doubled(TopK):
        def encode(self, x, ctx):
            p = super().encode(x, ctx)
            p.parts[0] = p.parts[0] * 2
            return p

    stage = CompressedStage(nn.Identity(), spec, BoundaryCodecs.built(spec), 0, 4)
    stage.codec = Doubled(rate=0.5)
    with pytest.raises(RuntimeError, match="not the input at its kept mask"):
        stage(x)
