"""The compiled codec kernels (harness/compressors/kernels.py) against the torch path they
replace: the same payload bytes and decoded values, bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from harness.compressors import Context, build
from harness.compressors import quantize as q
from tests.conftest import ROOT


def _torch_path_encode(c, x: torch.Tensor):
    """The payload quantize made before the kernels (the fused path switched off)."""
    fused = q._fused_ok
    q._fused_ok = lambda g, bits: False
    try:
        return c.encode(x, Context(step=0, state={}))
    finally:
        q._fused_ok = fused


def _torch_path_decode(p, shape: tuple[int, ...], bits: int) -> torch.Tensor:
    b, n, d = q.fold(shape)
    codes = q.unpack_uint(p.parts[0], b * n * d, bits).view(b, n, d).float()
    lo, step = (p.parts[i].view(torch.float32).view(b, 1, d) for i in (1, 2))
    return torch.addcmul(lo, codes, step).view(shape)


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("shape", [(4, 96, 64), (2, 7, 12), (3, 5, 8), (33, 16), (1, 1, 4), (3, 5, 7), (2, 4, 10)])
def test_quantize_kernels_give_the_torch_paths_bytes_and_values(shape: tuple[int, ...], bits: int) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(bits))
    flat = x.view(-1)
    flat[::7] = 0.0
    flat[3::11] = -0.0  # signed zeros: min/max and the offset keep their sign as torch does
    if x.dim() == 3 and x.shape[0] > 1:
        x[1, :, 0] = 1.5  # a constant column: step 1, every code 0
    c = build({"name": "quantize", "bits": bits})
    want = _torch_path_encode(c, x)
    got = c.encode(x, Context(step=0, state={}))
    assert got.header == want.header
    assert torch.equal(got.parts[0], want.parts[0]) and torch.equal(_as_bytes(got.parts[2]), _as_bytes(want.parts[2]))
    # the offsets: the same values; a column whose minimum is a zero of both signs may differ in
    # that zero's sign (torch's min does not say which it returns; the kernel keeps the first)
    lo_got, lo_want = got.parts[1].view(torch.float32), want.parts[1].view(torch.float32)
    assert torch.equal(lo_got, lo_want)  # == on floats: -0.0 == 0.0
    differ = _as_bytes(lo_got).view(torch.int32) != _as_bytes(lo_want).view(torch.int32)
    assert (lo_got[differ] == 0).all()
    # ... and every decoded value is bit-identical either way (±0 + code·step rounds alike)
    y = c.decode(got, Context(step=0, state={}))
    assert torch.equal(_as_bytes(y), _as_bytes(_torch_path_decode(want, tuple(x.shape), bits)))
    assert torch.equal(_as_bytes(y), _as_bytes(_torch_path_decode(got, tuple(x.shape), bits)))


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # the torch path's NaN code
def test_quantize_kernels_leave_a_nan_to_torch() -> None:
    """torch's min/max propagate a NaN into the column's offset; the kernel says so and the
    torch path runs (the same payload as before)."""
    x = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(0))
    x[1, 3, 5] = float("nan")
    c = build({"name": "quantize", "bits": 4})
    got, want = c.encode(x, Context(step=0, state={})), _torch_path_encode(c, x)
    for a, b in zip(got.parts, want.parts, strict=True):
        assert torch.equal(_as_bytes(a), _as_bytes(b))
    assert torch.isnan(got.parts[1].view(torch.float32).view(2, 8)[1, 5])


def test_the_fork_server_rehearses_the_runs_codecs_without_starting_a_thread() -> None:
    """What quantize compiles (numba, LLVM) is loaded in the fork server, before any fork, so
    stages share it; and the server still has one thread (it refuses to fork otherwise)."""
    code = (
        "import json, sys\n"
        "from harness.runtime import forkserver as fs\n"
        "from harness.compressors import kernels\n"
        "q4 = {'name': 'quantize', 'bits': 4}\n"
        "fs._rehearse_codecs({'fwd': q4, 'bwd': q4, 'shape': [2, 16, 32]})\n"
        "print(json.dumps({'threads': fs.threads(), 'numba': 'numba' in sys.modules,\n"
        "  'compiled': len(kernels.quantize_encode(4).signatures) + len(kernels.quantize_decode(4).signatures)}))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"threads": 1, "numba": True, "compiled": 2}, got


def _numpy_path_encode(c, x: torch.Tensor):
    """The payload topk made before the kernels (rows too short for the compiled selection)."""
    from harness.compressors import kernels

    sample = kernels.SAMPLE
    kernels.SAMPLE = 1 << 40
    try:
        return c.encode(x, Context(step=0, state={}))
    finally:
        kernels.SAMPLE = sample


def _topk_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(4, 512, 512, generator=g)
    ties = torch.randint(-3, 4, (4, 512, 512), generator=g).float()  # 7 levels: ties past k
    some_ties = normal.clone()
    some_ties[1, :, :8] = 2.5  # tied entries, all kept at 90%
    sorted_rows = torch.sort(normal.view(4, -1), dim=1).values.view(4, 512, 512)  # a strided sample is skewed
    nan_row = normal.clone()
    nan_row[2, 7, 9] = float("nan")
    zeros = normal.clone()
    zeros[3] = 0.0
    zeros[3, 0, :3] = -0.0
    unsampled = normal.clone()
    unsampled.view(4, -1)[1:, ::256] = 0.0  # what the strided sample sees: its bracket misses, numpy's path
    return {
        "normal": normal,
        "ties": ties,
        "some_ties": some_ties,
        "sorted": sorted_rows,
        "nan": nan_row,
        "zeros": zeros,
        "unsampled": unsampled,
    }


def test_topk_names_a_nan_instead_of_failing_inside_numpy() -> None:
    c = build({"name": "topk", "rate": 0.9})
    with pytest.raises(ValueError, match="instance 2 of the tensor holds NaN"):
        c.encode(_topk_inputs()["nan"], Context(step=0, state={}))


@pytest.mark.parametrize("rate", [0.9, 0.5, 0.99])
@pytest.mark.parametrize("name", ["normal", "ties", "some_ties", "sorted", "zeros", "unsampled"])
def test_topk_kernels_give_the_numpy_paths_payload_and_decode(name: str, rate: float) -> None:
    """Rows of 262,144 entries (4 MiB: the row-by-row path). Where the compiled selection
    declines a row (ties past the threshold, a missed bracket) numpy's path does it: the
    payload is the same either way, and the decode from the bitmask is v where kept, 0 elsewhere."""
    x = _topk_inputs()[name]
    c = build({"name": "topk", "rate": rate})
    want, got = _numpy_path_encode(c, x), c.encode(x, Context(step=0, state={}))
    assert got.header == want.header
    for a, b in zip(got.parts, want.parts, strict=True):
        assert torch.equal(_as_bytes(a), _as_bytes(b))
    y = c.decode(got, Context(step=0, state={}))
    mask = c.kept_mask(got, Context(step=0, state={}))
    assert torch.equal(_as_bytes(y), _as_bytes(torch.where(mask, x, torch.zeros(()))))


def test_ef_over_topk_carries_the_error_from_the_bitmask_as_torch_where_would() -> None:
    x = _topk_inputs()["zeros"]
    c = build({"name": "topk", "rate": 0.9})
    p = c.encode(x, Context(step=0, state={}))
    e = torch.empty_like(x)
    assert c.write_unkept(p, x, e, Context(step=0, state={}))
    want = torch.where(c.kept_mask(p, Context(step=0, state={})), x.new_zeros(()), x)
    assert torch.equal(_as_bytes(e), _as_bytes(want))
    # indices instead of a bitmask (rate 0.999: fewer bits that way): no compiled path, said so
    p = build({"name": "topk", "rate": 0.999}).encode(x, Context(step=0, state={}))
    assert not c.write_unkept(p, x, e, Context(step=0, state={}))


_TOPK_DIGESTS = (
    "import hashlib, json, torch\n"
    "from harness.compressors import Context, build, simd\n"
    "from tests.test_kernels import _topk_inputs\n"
    "out = {'avx2': simd.AVX2}\n"
    "for name in ('normal', 'some_ties', 'zeros'):\n"
    "    for rate in (0.9, 0.5):\n"
    "        c = build({'name': 'topk', 'rate': rate})\n"
    "        p = c.encode(_topk_inputs()[name], Context(step=0, state={}))\n"
    "        y = c.decode(p, Context(step=0, state={}))\n"
    "        h = hashlib.sha256()\n"
    "        for t in (*p.parts, y):\n"
    "            h.update(t.contiguous().view(torch.uint8).numpy().tobytes())\n"
    "        out[f'{name}@{rate}'] = h.hexdigest()\n"
    "print(json.dumps(out))\n"
)


def test_topk_kernels_give_the_same_bytes_with_the_generic_permutation(tmp_path) -> None:
    """simd.py permutes a block's lanes with AVX2's vpermd where the host has it, else with
    generic lane extracts: both give the same payloads and decodes (compared in two processes,
    each with its own numba cache, since the choice is compiled in)."""
    runs = {}
    for mode in ("host", "generic"):
        env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / mode), "OMP_NUM_THREADS": "1"}
        if mode == "generic":
            env["PIPENEM_CODEC_SIMD"] = "generic"
        else:
            env.pop("PIPENEM_CODEC_SIMD", None)
        out = subprocess.run(
            [sys.executable, "-c", _TOPK_DIGESTS], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
        )
        assert out.returncode == 0, out.stderr
        runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    assert runs["generic"].pop("avx2") is False
    runs["host"].pop("avx2")
    assert runs["host"] == runs["generic"]


@pytest.mark.parametrize("name", ["normal", "ties", "zeros", "unsampled"])
def test_ef_over_topk_in_one_pass_carries_the_three_steps_bits(name: str, monkeypatch) -> None:
    """ef(topk)'s fused path (lane_kernels.top_rows_carrying: x + e, selection and carried
    error row by row; rows the kernel declines by numpy) against ef's three steps (add, encode,
    error from the bitmask), over four steps: the same payloads and carried errors, bit for bit."""
    from harness.compressors.sparse import TopK

    g = torch.Generator().manual_seed(5)
    xs = [_topk_inputs()[name] * (1 + s) + torch.randn(4, 512, 512, generator=g) * (name != "ties") for s in range(4)]
    runs = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(TopK, "encode_with_state", lambda *a, **k: None)
        c, state, got = build({"name": "ef", "inner": {"name": "topk", "rate": 0.9}}), {}, []
        for step, x in enumerate(xs):
            p = c.encode(x, Context(step=step, state=state))
            got.append([_as_bytes(t).clone() for t in (*p.parts, state["e"])])
        runs.append(got)
    for a, b in zip(*runs, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("n,k", [(10, 3), (2048, 205), (524288, 52429)])
def test_randk_positions_are_torch_randperms_first_k_sorted(n: int, k: int) -> None:
    """randk's positions come from torch.randperm's first k Fisher–Yates steps, not a whole
    shuffle (sparse.randperm_prefix): the same positions as randperm(n)[:k], sorted."""
    from harness.compressors.sparse import _randperm_is_fisher_yates, randperm_prefix

    assert _randperm_is_fisher_yates()  # else randperm_prefix falls back to randperm itself
    for step in range(3):
        ctx = Context(boundary=1, step=step, seed=4)
        want = torch.randperm(n, generator=ctx.generator(salt=1))[:k].sort().values
        assert torch.equal(randperm_prefix(ctx.generator(salt=1), n, k, ctx), want)


@pytest.mark.parametrize("name", ["zeros", "unsampled"])
def test_ef21_over_topk_updates_its_estimates_from_the_bitmask_as_decode_and_add_would(name: str, monkeypatch) -> None:
    """EF21 over topk's fused paths (the sender's x − g, selection and g += D(c) row by row:
    TopK.encode_with_state; the receiver's g += D(c) and its output copy in one pass:
    TopK.decode_add) against subtracting, encoding, decoding and adding, over four steps: the
    same payloads, estimates and outputs, bit for bit."""
    from harness.compressors.sparse import TopK

    g = torch.Generator().manual_seed(6)
    xs = [_topk_inputs()[name] + torch.randn(4, 512, 512, generator=g) * s * (name == "zeros") for s in range(4)]
    runs = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(TopK, "encode_with_state", lambda *a, **k: None)
            monkeypatch.setattr(TopK, "decode_add", lambda *a, **k: False)
        c, send, recv, got = build({"name": "ef21", "inner": {"name": "topk", "rate": 0.9}}), {}, {}, []
        for step, x in enumerate(xs):
            p = c.encode(x, Context(step=step, state=send))
            y = c.decode(p, Context(step=step, state=recv))
            got.append([_as_bytes(t).clone() for t in (*p.parts, send["g"], recv["g"], y)])
        runs.append(got)
    for a, b in zip(*runs, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
