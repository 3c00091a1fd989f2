"""Compressor protocol: round trips, defining properties, exact payload sizes, bad config."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from basics.errors import ConfigError
from harness.compressors import REGISTRY, Context, Payload, build, wire_ratio
from harness.compressors.base import ForwardRecord
from harness.compressors.wire import index_width, pack_uint, positions_bytes, unpack_uint

torch.manual_seed(0)


def _align(n: int) -> int:
    return (n + 7) // 8 * 8


def _expected(header_ints: int, part_bytes: list[int]) -> int:
    """The wire format's size by formula: aligned header + each aligned part."""
    return _align(2 + 8 * header_ints + 5 * len(part_bytes)) + sum(_align(b) for b in part_bytes)


X = torch.randn(4, 64, 48)
B, N, D = X.shape
SHAPE_INTS = 2 + X.dim()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_none_is_bit_exact(dtype: torch.dtype) -> None:
    x = X.to(dtype)
    x_hat, p = build("none").roundtrip(x)
    assert x_hat.dtype == dtype and torch.equal(
        x_hat.view(torch.int16 if dtype != torch.float32 else torch.int32),
        x.view(torch.int16 if dtype != torch.float32 else torch.int32),
    )
    assert p.nbytes == _expected(SHAPE_INTS, [x.numel() * x.element_size()])


@pytest.mark.parametrize("scope", ["instance", "tensor"])
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9, 0.99])
def test_topk_keeps_exactly_the_largest_entries(scope: str, rate: float) -> None:
    c = build({"name": "topk", "rate": rate, "scope": scope})
    x_hat, p = c.roundtrip(X)
    rows = X.reshape(B, -1) if scope == "instance" else X.reshape(1, -1)
    n = rows.shape[1]
    k = math.ceil((1 - rate) * n - 1e-9)
    kept = x_hat.reshape(rows.shape) != 0
    assert (kept.sum(1) == k).all()
    threshold = rows.abs().topk(k, dim=1).values[:, -1:]
    assert (rows.abs()[kept.logical_not()].reshape(rows.shape[0], -1) <= threshold).all()
    assert torch.equal(x_hat.reshape(rows.shape)[kept], rows[kept])  # values exact
    assert p.nbytes == _expected(SHAPE_INTS + 2, [rows.shape[0] * k * 4, positions_bytes(rows.shape[0], k, n)])


def test_topk_picks_the_cheaper_position_format() -> None:
    n = N * D
    # 90%: bitmask (n bits) beats packed indices (k·12 bits); 99%: packed wins
    assert positions_bytes(B, math.ceil(0.1 * n), n) == B * n // 8
    k = math.ceil(0.01 * n)
    assert positions_bytes(B, k, n) == math.ceil(B * k * index_width(n) / 8) < B * n // 8
    for rate in (0.9, 0.99):
        x_hat, _ = build({"name": "topk", "rate": rate}).roundtrip(X)
        assert (x_hat != 0).sum() == B * math.ceil((1 - rate) * n - 1e-9)


def test_randk_positions_come_from_the_shared_seed() -> None:
    c = build({"name": "randk", "rate": 0.75})
    ctx = Context(boundary=2, direction="backward", step=5, seed=1)
    x_hat, p = c.roundtrip(X, ctx)
    k = math.ceil(0.25 * N * D)
    assert p.nbytes == _expected(SHAPE_INTS + 1, [B * k * 4])  # values only, no indices
    kept = x_hat.reshape(B, -1) != 0
    assert (kept == kept[0]).all() and kept[0].sum() == k
    assert torch.equal(x_hat.reshape(B, -1)[kept], X.reshape(B, -1)[kept])
    other, _ = c.roundtrip(X, Context(boundary=2, direction="backward", step=6, seed=1))
    assert not torch.equal(other != 0, x_hat != 0)  # a new step draws new positions
    # a receiver with another step would decode the values at the wrong positions
    wrong = c.decode(
        Payload.from_bytes(c.encode(X, ctx).to_bytes()), Context(boundary=2, direction="backward", step=7, seed=1)
    )
    assert not torch.equal(wrong, x_hat)


@pytest.mark.parametrize("name,axis", [("column", 2), ("row", 1)])
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_structured_masks_keep_the_largest_norm_columns_or_rows(name: str, axis: int, rate: float) -> None:
    x_hat, p = build({"name": name, "rate": rate}).roundtrip(X)
    size = X.shape[axis]
    k = math.ceil((1 - rate) * size - 1e-9)
    norms = X.square().sum(3 - axis)  # (b, size)
    top = norms.topk(k, dim=1).indices.sort(1).values
    kept_mask = x_hat.abs().sum(3 - axis) != 0
    assert torch.equal(kept_mask.nonzero()[:, 1].view(B, k), top)
    idx = top.unsqueeze(1).expand(B, N, k) if axis == 2 else top.unsqueeze(2).expand(B, k, D)
    assert torch.equal(x_hat.gather(axis, idx), X.gather(axis, idx))  # values exact
    assert float(x_hat.square().sum()) == pytest.approx(float(norms.gather(1, top).sum()), rel=1e-5)
    other = D if axis == 2 else N
    assert p.nbytes == _expected(SHAPE_INTS + 2, [B * k * (N if axis == 2 else D) * 4, positions_bytes(B, k, size)])
    del other


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantize_error_within_half_a_step(bits: int) -> None:
    c = build({"name": "quantize", "bits": bits})
    x_hat, p = c.roundtrip(X)
    step = (X.amax(1, keepdim=True) - X.amin(1, keepdim=True)) / (2**bits - 1)
    assert ((x_hat - X).abs() <= step / 2 + 1e-5).all()
    assert p.nbytes == _expected(SHAPE_INTS, [math.ceil(X.numel() * bits / 8), B * D * 4, B * D * 4])
    xs, _ = build({"name": "quantize", "bits": bits, "stochastic": True}).roundtrip(X)
    assert ((xs - X).abs() < step + 1e-5).all()


def test_quantize_stochastic_rounding_is_unbiased() -> None:
    x = torch.linspace(0, 1, 257).repeat(1, 64, 1)  # one instance, 64 identical rows
    errs = [
        build({"name": "quantize", "bits": 2, "stochastic": True}).roundtrip(x, Context(step=s))[0] - x
        for s in range(200)
    ]
    assert torch.stack(errs).mean().abs() < 2e-3


def test_lowrank_full_rank_reconstructs_and_sizes() -> None:
    r = min(N, D)
    x_hat, p = build({"name": "lowrank", "rank": r}).roundtrip(X)
    assert torch.allclose(x_hat, X, atol=1e-4)
    assert p.nbytes == _expected(SHAPE_INTS + 1, [B * N * r * 4, B * D * r * 4])
    c = build({"name": "lowrank", "rate": 0.75})
    _, p = c.roundtrip(X)
    r = math.ceil(0.25 * min(N, D))
    assert p.nbytes == _expected(SHAPE_INTS + 1, [B * N * r * 4, B * D * r * 4])


def test_lowrank_power_iteration_warm_start_converges_on_low_rank_input() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 64, 4, generator=g) @ torch.randn(2, 4, 48, generator=g)
    c = build({"name": "lowrank", "rank": 4, "method": "power"})
    ctx = Context()
    errs = []
    for step in range(4):
        ctx.step = step
        x_hat, _ = c.roundtrip(x, ctx)
        errs.append(float((x_hat - x).norm() / x.norm()))
    assert "q" in ctx.state and errs[-1] < 1e-4


def test_adaptive_rank_follows_the_spectrum() -> None:
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(64, 48, generator=g))
    v, _ = torch.linalg.qr(torch.randn(48, 48, generator=g))
    s = torch.tensor([10.0, 8, 6, 0.5] + [0.01] * 44)
    x = (u * s @ v.T).unsqueeze(0)
    c = build({"name": "lowrank_adaptive", "threshold": 0.1})
    x_hat, p = c.roundtrip(x)
    assert int(p.parts[0][0]) == 3  # σ_k/σ_1 ≥ 0.1 for the first three
    assert p.nbytes == _expected(SHAPE_INTS, [2, 64 * 3 * 4, 48 * 3 * 4])


def test_ef_accumulated_error_telescopes() -> None:
    """Σ decoded = Σ x − e_T: nothing is lost, only delayed (the defining property of EF)."""
    c = build({"name": "ef", "inner": {"name": "topk", "rate": 0.9}})
    ctx = Context()
    xs = [torch.randn(2, 16, 8) for _ in range(6)]
    decoded = []
    for t, x in enumerate(xs):
        ctx.step = t
        payload = c.encode(x, ctx)
        decoded.append(c.decode(Payload.from_bytes(payload.to_bytes()), Context(step=t)))
    assert torch.allclose(sum(decoded), sum(xs) - ctx.state["e"], atol=1e-5)
    assert float(ctx.state["e"].norm()) > 0


@pytest.mark.parametrize(
    "inner",
    [
        {"name": "topk", "rate": 0.9},
        {"name": "topk", "rate": 0.7, "scope": "tensor"},
        {"name": "topk", "rate": 0.99},
        {"name": "topk", "rate": 0.5},  # positions as a bitmask (the others: as indices)
        {"name": "randk", "rate": 0.8},
        {"name": "randk", "rate": 0.8, "scale": True},  # scaled: takes the decode path
        {"name": "column", "rate": 0.5},
        {"name": "row", "rate": 0.5},
    ],
)
@pytest.mark.parametrize("shape", [(3, 16, 8), (16, 8)])
def test_ef_takes_its_residual_from_the_mask_with_the_bits_of_decoding(
    inner: dict, shape: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Masking inner compressors: e = v outside the kept mask (no self-decode), bit for bit what
    v − D(C(v)) gives, over steps that carry the error (fp32 and fp16)."""
    for dtype in (torch.float32, torch.float16):
        xs = [torch.randn(shape, generator=torch.Generator().manual_seed(t)).to(dtype) for t in range(3)]
        runs = []
        for exact in (True, False):
            c = build({"name": "ef", "inner": inner})
            if not exact:
                monkeypatch.setattr(type(c.inner), "decodes_kept_exactly", lambda self: False)
            ctx, out = Context(seed=3), []
            for t, x in enumerate(xs):
                ctx.step = t
                out.append((c.encode(x, ctx).to_bytes(), ctx.state["e"].clone()))
            runs.append(out)
            monkeypatch.undo()
        for (b1, e1), (b2, e2) in zip(*runs, strict=True):
            assert torch.equal(b1, b2) and torch.equal(e1, e2) and e1.dtype == dtype


def test_ef21_sender_and_receiver_keep_matching_state() -> None:
    c = build({"name": "ef21", "inner": {"name": "column", "rate": 0.5}})
    assert c.receiver_state
    send, recv = Context(), Context()
    x = torch.randn(2, 16, 8)
    errs = []
    for t in range(8):
        send.step = recv.step = t
        out = c.decode(Payload.from_bytes(c.encode(x, send).to_bytes()), recv)
        assert torch.equal(send.state["g"], recv.state["g"])
        errs.append(float((out - x).norm()))
    assert errs[-1] < 1e-5 < errs[0]  # a constant input is learned exactly


def test_sketch_recovers_sparse_chunks() -> None:
    # every 64-entry chunk has exactly s = 4 nonzeros; from m = 32 Gaussian measurements OMP
    # recovers almost every chunk exactly (it is a probabilistic guarantee, not a certain one)
    c = build({"name": "sketch", "rate": 0.5, "chunk": 64, "sparsity": 0.125})
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(64, 64)
    for row in x:
        row[torch.randperm(64, generator=g)[:4]] = torch.randn(4, generator=g) + 2
    x = x.view(4, 16, 64)
    x_hat, p = c.roundtrip(x)
    exact = ((x_hat - x).view(64, 64).norm(dim=1) < 1e-4).sum()
    assert exact >= 60
    assert p.nbytes == _expected(SHAPE_INTS, [64 * 32 * 4])


@pytest.mark.parametrize("name", sorted(set(REGISTRY)))
def test_every_compressor_roundtrips_and_reports_an_exact_size(name: str) -> None:
    spec = {"name": name}
    if name in ("topk", "randk", "column", "row", "sketch", "lowrank"):
        spec["rate"] = 0.5
    if name in ("ef", "ef21"):
        spec["inner"] = {"name": "topk", "rate": 0.5}
    c = build(spec)
    ctx = None
    if name == "mirror":  # backward only: it follows a masking forward of the same micro-batch
        fwd, fctx = build({"name": "column", "rate": 0.5}), Context()
        ctx = Context(direction="backward", forward=ForwardRecord(fwd, fwd.encode(X, fctx), fctx))
    x_hat, p = c.roundtrip(X, ctx)
    assert x_hat.shape == X.shape and x_hat.dtype == X.dtype
    assert len(p.to_bytes()) == p.nbytes
    if name != "lowrank_adaptive":  # on full-rank noise it honestly sends more than dense
        assert wire_ratio(X, p) > 0.99


@pytest.mark.parametrize("d", [2, 4, 16, 256, 300])
@pytest.mark.parametrize("name", ["column", "topk"])
def test_small_and_odd_widths_use_packed_positions_correctly(d: int, name: str) -> None:
    """Index widths of 1-8 bits come back as uint8 from unpacking: positions must still work."""
    x = torch.randn(3, 5, d)
    x_hat, _ = build({"name": name, "rate": 0.9}).roundtrip(x)
    kept = x_hat != 0
    assert torch.equal(x_hat[kept], x[kept]) and kept.any()


def test_pack_uint_roundtrip_all_widths() -> None:
    g = torch.Generator().manual_seed(0)
    for width in (1, 2, 3, 4, 7, 8, 12, 16, 19, 32):
        v = torch.randint(0, 2 ** min(width, 31), (1001,), generator=g)
        packed = pack_uint(v, width)
        assert packed.numel() == math.ceil(1001 * width / 8) or width in (16, 32)
        assert torch.equal(unpack_uint(packed, 1001, width), v)


@pytest.mark.parametrize(
    "spec,field,words",
    [
        ({"name": "topkk", "rate": 0.5}, "compressor.name", "unknown compressor"),
        ({"name": "topk", "rate": 0}, "compressor.rate", "(0, 1)"),
        ({"name": "column", "rate": 1.0}, "compressor.rate", "(0, 1)"),
        ({"name": "row", "rate": -0.2}, "compressor.rate", "(0, 1)"),
        ({"name": "quantize", "bits": 3}, "compressor.bits", "2, 4 or 8"),
        ({"name": "topk", "rate": 0.5, "scope": "batch"}, "compressor.scope", "instance"),
        ({"name": "topk"}, "compressor", "rate"),
        ({"name": "ef", "inner": {"name": "nope"}}, "compressor.inner.name", "unknown compressor"),
        ({"name": "no.such.module:Thing"}, "compressor.name", "cannot import"),
        ({"rate": 0.5}, "compressor", "'name'"),
    ],
)
def test_bad_config_names_the_field(spec: dict, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(spec)
    assert info.value.field == field and words in info.value.message


def test_rank_larger_than_the_tensor_is_refused() -> None:
    c = build({"name": "lowrank", "rank": 49})
    with pytest.raises(ConfigError, match="larger than min"):
        c.check_shape(X.shape)
    with pytest.raises(ConfigError) as info:
        c.encode(X, Context())
    assert info.value.field == "rank"


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "column", "rate": 0.7},
        {"name": "row", "rate": 0.3},
        {"name": "topk", "rate": 0.8},
        {"name": "topk", "rate": 0.5, "scope": "tensor"},
        {"name": "randk", "rate": 0.6},
        {"name": "randk", "rate": 0.6, "scale": True},
        {"name": "ef", "inner": {"name": "column", "rate": 0.5}},
    ],
)
def test_exact_boundary_gradient_is_the_autograd_gradient_of_the_masked_forward(spec: dict) -> None:
    """For masking compressors, vjp == autograd through decode(encode(x)) with the kept positions fixed."""
    c = build(spec)
    x = torch.randn(3, 16, 24)
    ctx = Context(boundary=2, step=5, seed=1)
    p = c.encode(x, ctx)
    mask = c.kept_mask(p, ctx).expand(3, 16, 24).float()
    scale = 16 * 24 / math.ceil(0.4 * 16 * 24) if spec.get("scale") else 1.0  # randk's N/k
    xv = x.clone().requires_grad_(True)
    out = xv * mask * scale
    g = torch.randn_like(x)
    out.backward(g)
    assert torch.allclose(c.vjp(g, p, ctx), xv.grad)
    assert c.jacobian == "mask"
    # the mask is what decode kept: decode(encode(x)) is x on the mask, 0 elsewhere
    # (ef: same here, no carried error yet)
    if not spec.get("scale"):
        assert torch.equal(c.decode(p, ctx), x * mask)


@pytest.mark.parametrize("method", ["svd", "power"])
def test_lowrank_exact_gradient_is_the_orthogonal_projection_it_applied(method: str) -> None:
    c = build({"name": "lowrank", "rank": 4, "method": method})
    x = torch.randn(2, 32, 16)
    p = c.encode(x, Context())
    g = torch.randn_like(x)
    v = c.vjp(g, p, Context())
    assert torch.allclose(c.vjp(v, p, Context()), v, atol=1e-5)  # a projection: idempotent
    assert torch.allclose((v * g).sum(), (v * v).sum(), rtol=1e-4)  # orthogonal: <Pg, g> = |Pg|²
    if method == "svd":  # it projects onto the column space the forward kept
        assert torch.allclose(c.vjp(c.decode(p, Context()), p, Context()), c.decode(p, Context()), atol=1e-4)


@pytest.mark.parametrize("name", ["quantize", "fp16", "sketch", "none"])
def test_quantizers_casts_and_sketch_stay_straight_through(name: str) -> None:
    c = build({"name": name, "rate": 0.5} if name == "sketch" else name)
    x = torch.randn(2, 8, 64)
    p = c.encode(x, Context())
    g = torch.randn_like(x)
    assert c.jacobian == "straight-through" and c.vjp(g, p, Context()) is g


@pytest.mark.parametrize(
    "fwd",
    [
        {"name": "column", "rate": 0.9},
        {"name": "topk", "rate": 0.9},
        {"name": "row", "rate": 0.5},
        {"name": "randk", "rate": 0.9},
    ],
)
def test_mirror_sends_the_gradient_at_the_forward_kept_positions_as_values_only(fwd: dict) -> None:
    f, m = build(fwd), build("mirror")
    x, g = torch.randn(4, 64, 128), torch.randn(4, 64, 128)
    fctx = Context(boundary=1, step=2)
    fp = f.encode(x, fctx)
    bctx = Context(boundary=1, direction="backward", step=2, forward=ForwardRecord(f, fp, fctx))
    bp = m.encode(g, bctx)
    mask = f.kept_mask(fp, fctx)
    assert torch.equal(m.decode(Payload.from_bytes(bp.to_bytes()), bctx), g * mask)
    kept = int(mask.expand(4, 64, 128).sum())
    assert bp.nbytes == _expected(SHAPE_INTS, [kept * 4])  # values only: no index bytes
    if fwd["name"] != "randk":  # randk's forward carries no indices either
        assert wire_ratio(g, bp) > wire_ratio(x, fp)


def test_mirror_refuses_a_forward_without_kept_positions() -> None:
    from harness.config.schema import build_spec
    from harness.runtime.check import check_run

    spec = build_spec(
        {
            "topology": str(Path(__file__).parent.parent / "topologies" / "ci-4stage.yaml"),
            "model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "ctx": 32},
            "compression": {"fwd": {"name": "quantize", "bits": 4}, "bwd": "mirror"},
        }
    )
    with pytest.raises(ConfigError) as exc:
        check_run(spec)
    assert exc.value.field == "compression.bwd" and "quantize" in exc.value.message


_FACTORIES = {
    torch.zeros,
    torch.empty,
    torch.full,
    torch.ones,
    torch.tensor,
    torch.arange,
    torch.randn,
    torch.rand,
    torch.randperm,
}


class _AllocationsNameTheirDevice(torch.overrides.TorchFunctionMode):
    """Fails on a tensor factory called without ``device=``: on a GPU it would allocate on
    the host and mix devices (or copy silently). Seeded draws (``generator=``) are made on
    the CPU on purpose, identically on every device and on both ends, then moved."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _FACTORIES and "device" not in kwargs and "generator" not in kwargs:
            raise AssertionError(f"torch.{func.__name__} without device= inside a compressor")
        return func(*args, **kwargs)


@pytest.mark.parametrize(
    "spec",
    [
        *[
            n
            for n in sorted(set(REGISTRY))
            if n not in ("topk", "randk", "column", "row", "sketch", "lowrank", "ef", "ef21", "mirror")
        ],
        {"name": "topk", "rate": 0.5},
        {"name": "topk", "rate": 0.999},  # packed indices instead of a bitmask
        {"name": "randk", "rate": 0.5, "scale": True},
        {"name": "column", "rate": 0.5},
        {"name": "row", "rate": 0.5},
        {"name": "sketch", "rate": 0.5, "chunk": 64},
        {"name": "lowrank", "rate": 0.5},
        {"name": "lowrank", "rank": 4, "method": "power"},
        {"name": "quantize", "bits": 4, "stochastic": True},
        {"name": "ef", "inner": {"name": "topk", "rate": 0.5}},
        {"name": "ef21", "inner": {"name": "quantize", "bits": 2}},
    ],
    ids=str,
)
def test_compressors_allocate_on_the_tensors_device(spec: str | dict) -> None:
    """What a GPU stage needs (`compute.device: cuda`): encode, decode, the kept mask and the
    exact boundary Jacobian create every tensor on the input's or the payload's device."""
    c = build(spec)
    x = X.clone()
    with _AllocationsNameTheirDevice():
        x_hat, p = c.roundtrip(x, Context(step=1))
        c.vjp(torch.ones_like(x), p, Context(step=1))
        fctx = Context()
        fwd = build({"name": "column", "rate": 0.5})
        record = ForwardRecord(fwd, fwd.encode(x, fctx), fctx)
        build("mirror").roundtrip(x, Context(direction="backward", forward=record))
    assert x_hat.device == x.device and p.device == x.device
    assert Payload.from_bytes(p.to_bytes()).to("cpu").device == torch.device("cpu")


def test_payloads_and_decoded_tensors_are_what_they_were_before_the_codecs_were_made_fast() -> None:
    """Digests of every built-in compressor's wire bytes, decoded tensor, kept mask and vjp on
    fixed inputs, against those the implementation gave before issue 21 (tests/codec_golden.py)."""
    import json

    from tests.codec_golden import digests, same

    golden = json.loads((Path(__file__).parent / "data" / "codec_golden.json").read_text())
    now = digests()
    assert len(now) == len(golden) > 30
    changed = {
        k: {f: (golden[k].get(f), v) for f, v in row.items() if not same(v, golden[k].get(f, ""))}
        for k, row in now.items()
    }
    assert not {k: v for k, v in changed.items() if v}


@pytest.mark.parametrize("rate", [0.5, 0.9])
def test_topk_keeps_a_valid_top_k_set_when_magnitudes_tie(rate: float) -> None:
    """Identical rows (position 0 of sequences that start with the same byte is the same
    vector at every boundary) and exact zeros (gradients masked by an exact boundary
    gradient) tie at the threshold. Any k of the tied entries is a valid top-k; which ones
    are kept is np.partition's choice (torch.topk chose others: README, "TopK and ties")."""
    g = torch.Generator().manual_seed(0)
    row = torch.randn(64, generator=g)
    x = torch.randn(4, 64, 64, generator=g)
    x[:, 0, :] = row  # four identical rows
    x[0, 1:20, :] = 0.0  # and exact zeros
    c = build({"name": "topk", "rate": rate})
    p = c.encode(x, Context(boundary=0, direction="forward", step=0, seed=0, state={}))
    d = c.decode(p, Context(boundary=0, direction="forward", step=0, seed=0, state={}))
    for b in range(4):  # per instance (topk's default scope)
        kept = d[b] != 0  # kept zeros decode to zero: they count as dropped here
        mags = x[b].abs()
        assert 0 < int(kept.sum()) <= math.ceil(mags.numel() * (1 - rate))
        assert (d[b][kept] == x[b][kept]).all()
        assert mags[kept].min() >= mags[~kept].max()  # nothing dropped outweighs anything kept


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "column", "rate": 0.9},
        {"name": "column", "rate": 0.3},
        {"name": "row", "rate": 0.9},
        {"name": "randk", "rate": 0.9},
        {"name": "randk", "rate": 0.5, "scale": True},
        {"name": "quantize", "bits": 4},
        {"name": "topk", "rate": 0.9},
        {"name": "topk", "rate": 0.5},
        {"name": "ef", "inner": {"name": "topk", "rate": 0.9}},
    ],
    ids=lambda s: "-".join(str(v) for v in s.values()),
)
@pytest.mark.parametrize("shape", [(6, 96, 80), (5, 90, 77)], ids=["d%8=0", "d%8!=0"])
def test_instance_by_instance_paths_give_the_vectorised_paths_bytes(spec: dict, shape: tuple, monkeypatch) -> None:
    """Large CPU tensors are encoded and decoded instance by instance (harness.compressors.base
    .by_instance); the golden digests' small inputs take the vectorised path. Both paths, forced
    on one input, give the same wire bytes and the same decoded tensor (rows of whole 8-lane
    blocks take the streamed and 8-lane kernels, others the row-by-row ones)."""
    import harness.compressors.base as base

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(7))
    out = {}
    for name, limit in (("vectorised", 1 << 62), ("by instance", 0)):
        monkeypatch.setattr(base, "LOOP_BYTES", limit)
        assert base.by_instance(x) == (limit == 0)
        c = build(spec)
        p = c.encode(x, Context(step=3, seed=1))
        out[name] = (p.to_bytes(), c.decode(Payload.from_bytes(p.to_bytes()), Context(step=3, seed=1)))
    (b1, y1), (b2, y2) = out.values()
    assert torch.equal(b1, b2)
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_topk_row_by_row_breaks_ties_as_the_vectorised_path_does(dtype: torch.dtype, monkeypatch) -> None:
    """Magnitudes from {0, 1, 2}: the threshold falls inside a run of ties in every row; both
    paths keep the tied entries of lowest position (the stated rule), so the bytes agree."""
    import harness.compressors.base as base

    x = torch.randint(-2, 3, (6, 96, 80), generator=torch.Generator().manual_seed(3)).to(dtype)
    out = []
    for limit in (1 << 62, 0):
        monkeypatch.setattr(base, "LOOP_BYTES", limit)
        c = build({"name": "topk", "rate": 0.8})
        p = c.encode(x, Context())
        out.append((p.to_bytes(), c.decode(p, Context())))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    kept = out[0][1].reshape(6, -1) != 0
    assert (kept.sum(1) == math.ceil(96 * 80 * 0.2)).all()


def test_the_codec_benchmark_prints_one_json_object_per_compressor() -> None:
    """benchmarks/compressors.py --json (issue 21's interface): one object per compressor and
    malloc with its times, the floor measured in the same run, the ratio and the target (for
    error feedback: its inner compressor's ratio in that run plus one floor)."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "PIPENEM_ALLOCATOR": "system", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/compressors.py",
            "--json",
            "--shape",
            "4x64x32",
            "--repeat",
            "1",
            "--skip",
            "sketch",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["allocator"] for r in rows} == {"system malloc"}
    by_name = {r["compressor"]: r for r in rows}
    for r in rows:
        assert {"compressor", "allocator", "encode_ms", "decode_ms", "floor_ms", "ratio", "target"} <= set(r)
        # the times are printed to 1 µs: at this tiny shape that alone moves the ratio by a few %
        assert r["floor_ms"] > 0 and r["ratio"] == pytest.approx(
            (r["encode_ms"] + r["decode_ms"]) / r["floor_ms"], rel=0.2
        )
    assert by_name["topk(0.9)"]["target"] == 5.0 and by_name["quantize(bits=2)"]["target"] == 3.0
    assert by_name["ef(topk(0.9))"]["target"] == pytest.approx(by_name["topk(0.9)"]["ratio"] + 1, abs=0.011)


def test_column_of_a_strided_large_tensor_gives_the_contiguous_ones_bytes() -> None:
    """A gradient autograd hands over transposed takes numpy's einsum and torch's gather (the
    compiled kernels read strided input slowly): the same payload and decode as its copy."""
    g = torch.randn(2, 512, 1024, generator=torch.Generator().manual_seed(2)).transpose(1, 2)  # 4 MiB
    assert not g.is_contiguous()
    c = build({"name": "column", "rate": 0.9})
    a, b = c.encode(g, Context()), c.encode(g.contiguous(), Context())
    assert torch.equal(a.to_bytes(), b.to_bytes())
    assert torch.equal(c.decode(a, Context()), g.contiguous() * c.kept_mask(b, Context()))
