"""Fixed inputs and what every built-in compressor makes of them, as digests: the wire bytes,
the decoded tensor, the kept mask and the boundary vjp. ``tests/data/codec_golden.json`` holds
the digests the implementation had before the codecs were made fast (issue 21); the test
checks that payload bytes and decoded tensors stay identical.

    python -m tests.codec_golden > tests/data/codec_golden.json   # only to re-baseline, on purpose
"""

from __future__ import annotations

import hashlib
import json

import torch

from harness.compressors import Context, build
from harness.compressors.base import ForwardRecord
from harness.compressors.wire import Payload

SPECS = [
    {"name": "none"},
    {"name": "fp16"},
    {"name": "bf16"},
    {"name": "topk", "rate": 0.9},
    {"name": "topk", "rate": 0.5},
    {"name": "topk", "rate": 0.9, "scope": "tensor"},
    {"name": "randk", "rate": 0.9},
    {"name": "randk", "rate": 0.5, "scale": True},
    {"name": "column", "rate": 0.9},
    {"name": "column", "rate": 0.1},
    {"name": "row", "rate": 0.9},
    {"name": "row", "rate": 0.5},
    {"name": "quantize", "bits": 8},
    {"name": "quantize", "bits": 4},
    {"name": "quantize", "bits": 2},
    {"name": "quantize", "bits": 4, "stochastic": True},
    {"name": "lowrank", "rate": 0.9, "method": "power"},
    {"name": "lowrank", "rate": 0.75},
    {"name": "ef", "inner": {"name": "topk", "rate": 0.9}},
    {"name": "ef21", "inner": {"name": "column", "rate": 0.5}},
    {"name": "sketch", "rate": 0.5, "chunk": 64},
]
SHAPES = [(4, 64, 32), (2, 48, 24)]


def _digest(t: torch.Tensor) -> str:
    t = t.detach().contiguous()
    raw = t.view(torch.uint8) if t.dtype != torch.bool else t.to(torch.uint8)
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()[:20] + f":{tuple(t.shape)}:{t.dtype}"


def _approx(t: torch.Tensor) -> str:
    t = t.double()
    return f"approx:{float(t.sum()):.6e}:{float(t.norm()):.6e}:{tuple(t.shape)}"


def _approx_parts(p: Payload) -> str:
    """A payload by value: its float parts' absolute sum and norm (a factor's sign is the
    decomposition's choice), its other parts and header by digest."""
    floats = [t.double().abs().flatten() for t in p.parts if t.is_floating_point()]
    rest = [t for t in p.parts if not t.is_floating_point()]
    whole = torch.cat(floats) if floats else torch.zeros(0, dtype=torch.float64)
    head = hashlib.sha256(repr((p.header, [_digest(t) for t in rest])).encode()).hexdigest()[:12]
    return f"approx:{float(whole.sum()):.6e}:{float(whole.norm()):.6e}:{head}:{len(p.parts)}"


def same(a: str, b: str) -> bool:
    """Digests equal, or (``approx:``) sums and norms within 1e-4 relative."""
    if not (a.startswith("approx:") and b.startswith("approx:")):
        return a == b
    (_, sa, na, shape_a), (_, sb, nb, shape_b) = a.split(":", 3), b.split(":", 3)
    close = abs(float(sa) - float(sb)) <= 1e-4 * max(1.0, abs(float(sb)))
    return shape_a == shape_b and close and abs(float(na) - float(nb)) <= 1e-4 * float(nb)


def digests() -> dict[str, dict[str, str]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-stable across runs: multi-threaded reductions may sum in any order
    try:
        return _digests()
    finally:
        torch.set_num_threads(threads)


def _digests() -> dict[str, dict[str, str]]:
    out = {}
    for shape in SHAPES:
        g = torch.Generator().manual_seed(sum(shape))
        x = torch.randn(shape, generator=g) * torch.linspace(0.1, 3.0, shape[-1])
        grad = torch.randn(shape, generator=g)
        for spec in SPECS:
            c = build(spec)
            row: dict[str, str] = {}
            sender, receiver = {}, {}  # each side's state, carried to the second step (ef, warm starts)
            for step in range(2):
                send = Context(boundary=1, step=step, seed=7, state=sender)
                recv = Context(boundary=1, step=step, seed=7, state=receiver)
                p = c.encode(x + step, send)
                # lowrank's factors come from BLAS/LAPACK (matmul, QR, SVD), whose kernels differ
                # between CPUs (AVX2 vs AVX-512 paths sum in other orders): compared by value
                blas = c.name == "lowrank"
                row[f"payload{step}"] = _approx_parts(p) if blas else _digest(p.to_bytes())
                back = Payload.from_bytes(p.to_bytes())
                decoded = c.decode(back, recv)
                # sketch's OMP decode (least squares) is not bit-stable from run to run (the BLAS
                # kernels it takes depend on memory alignment): its decoded tensor is compared by value
                row[f"decoded{step}"] = _approx(decoded) if c.name == "sketch" or blas else _digest(decoded)
                mask = c.kept_mask(p, send)
                if mask is not None:
                    row[f"mask{step}"] = _digest(mask)
                vjp = c.vjp(grad, p, send)
                row[f"vjp{step}"] = _approx(vjp) if blas else _digest(vjp)
                if c.jacobian == "mask" and step == 0:
                    m = build("mirror")
                    fwd = ForwardRecord(c, p, send)
                    mp = m.encode(grad, Context(boundary=1, direction="backward", forward=fwd))
                    row["mirror"] = _digest(mp.to_bytes())
                    row["mirror_decoded"] = _digest(
                        m.decode(mp, Context(boundary=1, direction="backward", forward=fwd))
                    )
            out[f"{json.dumps(spec, sort_keys=True)} {shape}"] = row
    return out


if __name__ == "__main__":
    print(json.dumps(digests(), indent=1, sort_keys=True))
