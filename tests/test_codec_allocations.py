"""The codec path allocates nothing large once a run is going: decoders write into the buffers
a boundary keeps, encoders into reused scratch, receive buffers are reused (issue 21)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from harness.config.schema import build_spec
from harness.runtime.check import check_run
from harness.runtime.twin import run_twin
from tests.codec_golden import SPECS  # every built-in codec the golden digests cover
from tests.conftest import TOPOLOGIES, needs_netns, pipenem

LARGE = 1 << 20  # bytes: the boundary tensors here are 2 MiB (twin) and 64 MiB (distributed)
CODECS = [
    {"name": "column", "rate": 0.9},
    {"name": "topk", "rate": 0.9},
    {"name": "quantize", "bits": 4},
]


class FreshAllocations(TorchDispatchMode):
    """Records every op whose output is a new tensor of at least LARGE bytes (not an ``out=``
    argument, not a view of an input), while armed."""

    def __init__(self) -> None:
        super().__init__()
        self.armed, self.found = False, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.armed:
            seen = {
                t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
            }
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.device.type != "meta" and t.untyped_storage().nbytes() >= LARGE:
                    if t.untyped_storage().data_ptr() not in seen:
                        self.found.append(f"{func} -> {tuple(t.shape)} {t.dtype}")
        return out


class _Counted:
    """A compressor whose codec calls run under the counting mode (everything else passes through)."""

    def __init__(self, inner, mode: FreshAllocations) -> None:
        self._inner, self._mode = inner, mode

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if name not in ("encode", "decode", "vjp", "kept_mask"):
            return attr

        def counted(*args, **kwargs):
            with self._mode:
                return attr(*args, **kwargs)

        return counted


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c["name"])
def test_the_twin_allocates_no_large_tensor_on_the_codec_path_after_the_first_step(codec: dict) -> None:
    spec = build_spec(
        {
            "topology": str(TOPOLOGIES / "ci-4stage.yaml"),
            "model": {"d_model": 128, "n_layers": 4, "n_heads": 4, "ctx": 512},
            "data": {"dataset": "synthetic"},
            "train": {"steps": 3, "batch": 16, "micro_batches": 2, "warmup": 1},
            "compression": {"fwd": codec, "bwd": codec},
        }
    )
    run = check_run(spec)
    mode = FreshAllocations()
    counted = dataclasses.replace(run, fwd=_Counted(run.fwd, mode), bwd=_Counted(run.bwd, mode))

    def arm(row: dict) -> None:
        mode.armed = True  # from the second step on: the first one grows the boundaries' buffers

    rows = run_twin(counted, on_step=arm)
    assert len(rows) == 3 and all(r["loss"] == r["loss"] for r in rows)
    assert mode.found == [], mode.found[:10]


@needs_netns
@pytest.mark.netns
@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c["name"])
def test_stage_workers_fault_in_no_fresh_memory_per_step_on_the_system_malloc(tmp_path: Path, codec: dict) -> None:
    """A 64 MiB boundary tensor, glibc's malloc (which hands every block above 32 MiB back to the
    kernel on free): a codec that allocated its output every micro-batch would fault in 16,384
    pages each time, two micro-batches and two directions a step. After the first step the
    stages fault in far less: in a typical step under 32 MiB, and never a whole tensor (a
    pool grows while payloads are still held — by a send in flight, or until backward for the
    exact boundary gradient — on a busy machine now and then: payload-sized, not dense)."""
    topo = tmp_path / "fast.yaml"
    topo.write_text("name: fast\nstages: 3\ndefaults: {bandwidth: 10Gbit}\n")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        json.dumps(
            {
                "topology": str(topo),
                "model": {"d_model": 1024, "n_layers": 3, "n_heads": 8, "ctx": 1024},
                "train": {"steps": 6, "batch": 32, "micro_batches": 2},
                "compute": {"mode": "modeled", "profile": "h100"},
                "compression": {"fwd": codec, "bwd": codec},
            }
        )
    )
    r = pipenem(
        "train", str(cfg), "--out", str(tmp_path / "out"), "--quiet", env={**os.environ, "PIPENEM_ALLOCATOR": "system"}
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    for stage in range(3):
        rows = json.loads((tmp_path / "out" / f"stage{stage}.json").read_text())
        assert rows["allocator"] == "system malloc"
        later = sorted(s["faults"] for s in rows["steps"][2:])
        seen = (stage, [s["faults"] for s in rows["steps"]])
        assert later[len(later) // 2] < 8192, seen  # the median step: < 32 MiB of fresh pages
        assert later[-1] < 16384, seen  # no step faults in a whole 64 MiB tensor


@pytest.mark.parametrize("spec", SPECS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_a_pooled_buffer_is_never_handed_out_while_a_payload_holds_it(spec: dict) -> None:
    """A GPipe step keeps every micro-batch's forward payload until its backward (the exact
    vjp reads its kept positions): encoding the next micro-batches through the same pool must
    leave the earlier payloads, their decoded tensors and their vjps untouched. (The pool once
    returned its own tensor object, whose Python references do not count as storage uses: a
    topk payload's positions were overwritten by the next micro-batch's, silently changing
    the exact boundary gradient.)"""
    from harness.compressors import Context, build
    from harness.compressors.buffers import BufferPool

    pool = BufferPool()
    c = build(spec)
    g = torch.Generator().manual_seed(0)

    def ctx(m: int) -> Context:
        return Context(boundary=0, direction="forward", step=m, seed=0, state={}, buffers=pool)

    kept = []
    for m in range(4):
        x = torch.randn(4, 64, 64, generator=g)
        p = c.encode(x, ctx(m))
        grad = torch.randn(4, 64, 64, generator=g)
        kept.append((m, p, p.to_bytes().clone(), c.decode(p, ctx(m)).clone(), grad, c.vjp(grad, p, ctx(m)).clone()))
    for m, p, wire, decoded, grad, vjp in kept:
        assert torch.equal(p.to_bytes(), wire), f"micro-batch {m}'s payload changed under it"
        assert torch.equal(c.decode(p, ctx(m)), decoded)
        assert torch.equal(c.vjp(grad, p, ctx(m)), vjp)
