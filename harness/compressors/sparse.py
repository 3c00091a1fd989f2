"""Element-wise sparsification: ``topk`` (largest magnitudes) and ``randk`` (seeded random)."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

import harness.compressors.kernels as kernels  # not `from harness.compressors import`: a cycle
from basics.errors import ConfigError
from harness.compressors.base import Compressor, Context, as_3d, by_instance, check_rate, kept
from harness.compressors.shapes import fold, read_shape, shape_header
from harness.compressors.wire import (
    Payload,
    decode_positions,
    encode_bits_positions,
    encode_mask_positions,
    part_as,
    unpack_mask,
)


def _numpy_ok(t: torch.Tensor) -> bool:
    """CPU tensors numpy can view (not bfloat16): its selection and compaction are single passes."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64, torch.float16)


# encode_with_state's rules, numbered as lane_kernels.top_rows_carrying takes them
_RULES = {"error-first": 0, "error": 1, "estimate": 2}


def _selects_compiled(n: int) -> bool:
    """Whether rows of n entries take topk's compiled selection (whole bitmask bytes, and long
    enough for its sample)."""
    return n % 8 == 0 and n >= 16 * kernels.SAMPLE


def _compiled(t: torch.Tensor) -> bool:
    """Large contiguous float32 CPU tensors, which the compiled row-by-row kernels take (kernels.py)."""
    return t.dtype == torch.float32 and t.is_contiguous() and by_instance(t)


class TopK(Compressor):
    """Keep the ⌈(1−x)·N⌉ entries of largest magnitude, per instance (default) or per tensor.

    Wire: the kept values (in the tensor's dtype) and their positions as the cheaper of
    a bitmask (N bits per instance) or indices packed in ⌈log2 N⌉ bits each.
    """

    name = "topk"
    jacobian = "mask"

    def __init__(self, *, rate: float, scope: str = "instance") -> None:
        self._rate = check_rate(rate)
        if scope not in ("instance", "tensor"):
            raise ConfigError("scope", f"must be 'instance' or 'tensor', got {scope!r}")
        self.scope = scope

    def params(self) -> dict:
        return {"rate": self._rate, "scope": self.scope}

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        if self.scope == "tensor" or x.dim() < 3:
            return x.reshape(1, -1)
        return x.reshape(-1, x.shape[-2] * x.shape[-1])

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        x = x.detach()
        if not x.is_contiguous():  # e.g. a gradient autograd hands over strided: one copy, into a buffer
            x = ctx.empty(x.shape, x.dtype, x.device).copy_(x)
        flat = self._rows(x)
        rows, n = flat.shape
        k = kept(self._rate, n)
        if _numpy_ok(flat) and by_instance(flat) and rows > 1:
            return self._encode_rows(x, flat, k, ctx)
        values = ctx.empty((rows * k,), flat.dtype, flat.device)
        mask = self.top_mask(flat, k, ctx)
        if _numpy_ok(flat):  # numpy's compress: one pass, into the boundary's buffer
            np.compress(mask.numpy().reshape(-1), flat.numpy().reshape(-1), out=values.numpy())
        else:
            values.copy_(flat.masked_select(mask))
        pos, mode = encode_mask_positions(mask, k)
        return Payload([values, pos], shape_header(x) + (mode, k))

    def _encode_rows(
        self, x: torch.Tensor, flat: torch.Tensor, k: int, ctx: Context, state: tuple | None = None
    ) -> Payload:
        """The payload of :meth:`_select_rows` (``state``: :meth:`encode_with_state`'s)."""
        rows, n = flat.shape
        # 8 spare slots past the values: the compiled compaction stores 8 lanes at a time
        spare = ctx.empty((rows * k + 8,), flat.dtype, flat.device)
        pos, mode = encode_bits_positions(self._select_rows(flat, k, ctx, spare, state), n, k)
        return Payload([spare[: rows * k], pos], shape_header(x) + (mode, k))

    def encode_with_state(self, x: torch.Tensor, s: torch.Tensor, rule: str, ctx: Context) -> Payload | None:
        flat = self._rows(x)
        rows, n = flat.shape
        fits = s.is_contiguous() and s.dtype == flat.dtype
        if not (_compiled(flat) and rows > 1 and fits and _selects_compiled(n)):
            return None
        return self._encode_rows(x, flat, kept(self._rate, n), ctx, (s.view(rows, n).numpy(), _RULES[rule]))

    @staticmethod
    def top_mask(flat: torch.Tensor, k: int, ctx: Context) -> torch.Tensor:
        """(rows, n) bool: each row's k entries of largest magnitude. Found by selection (the
        k-th largest |value| per row, then one comparison), not a sort. Ties at that value go
        to the lowest positions (a rule torch.topk does not state)."""
        rows, n = flat.shape
        mag = ctx.empty(flat.shape, flat.dtype, flat.device)
        torch.abs(flat, out=mag)
        if _numpy_ok(flat):
            m, row = mag.numpy(), ctx.empty((n,), flat.dtype, flat.device).numpy()
            thr = torch.empty(rows, dtype=flat.dtype, device=flat.device)
            for r in range(rows):  # selection in place, in a reused row buffer (np.partition would copy)
                np.copyto(row, m[r])
                row.partition(n - k)
                thr[r] = float(row[n - k])
        else:
            thr = torch.kthvalue(mag, n - k + 1, dim=1).values
        mask = ctx.empty(flat.shape, torch.bool, flat.device)
        torch.ge(mag, thr.to(mag.device).unsqueeze(1), out=mask)
        counts = np.count_nonzero(mask.numpy(), axis=1) if _numpy_ok(flat) else mask.sum(1).tolist()
        for r in (i for i, c in enumerate(counts) if c != k):  # ties at the threshold: lowest positions first
            tied = mag[r] == thr[r]
            need = k - int((mag[r] > thr[r]).sum())
            mask[r] = (mag[r] > thr[r]) | (tied & (tied.cumsum(0) <= need))
        return mask

    @staticmethod
    def _select_rows(
        flat: torch.Tensor, k: int, ctx: Context, spare: torch.Tensor, state: tuple[np.ndarray, int] | None = None
    ) -> torch.Tensor:
        """:meth:`top_mask` and the kept values, row by row (large CPU tensors), as the payload
        holds them: each row's mask packed to bytes (little-endian bits, ⌈n/8⌉ a row) and its k
        values in position order, written into ``spare`` (rows·k values + 8 spare slots). Float32
        rows go to the compiled selection (lane_kernels.py); the rows it declines (a NaN, a
        missed bracket) and other dtypes take numpy's: a row's magnitudes, selection, mask and
        kept values while the row is in cache. The same bytes either way.

        ``state`` = (s (rows, n), rule): select from v = x ± s and update s as
        :meth:`encode_with_state` says, row by row as well."""
        rows, n = flat.shape
        bits_t = ctx.empty((rows, (n + 7) // 8), torch.uint8, flat.device)
        f, bits, vals = flat.numpy(), bits_t.numpy(), spare[: rows * k].numpy().reshape(rows, k)
        done = np.zeros(rows, dtype=bool)
        v = ctx.empty((n,), flat.dtype, flat.device).numpy() if state is not None else None  # a row of x ± s
        if flat.dtype == torch.float32 and _selects_compiled(n):
            scratch = ctx.empty((n + 8 + kernels.SAMPLE,), torch.int32, flat.device).numpy().view(np.uint32)
            hist = ctx.empty((kernels.HIST,), torch.int64, flat.device).numpy()
            sample, cand = scratch[n + 8 :], scratch[: n + 8]
            if state is None:
                kernels.lanes().top_rows(f, k, bits, spare.numpy(), done, sample, cand, hist)
            else:
                kernels.lanes().top_rows_carrying(f, *state, k, bits, spare.numpy(), done, sample, cand, hist, v)
        if done.all():
            return bits_t
        mag_t, sel_t = ctx.empty((n,), flat.dtype, flat.device), ctx.empty((n,), flat.dtype, flat.device)
        mag, sel, m = mag_t.numpy(), sel_t.numpy(), ctx.empty((n,), torch.bool, flat.device).numpy()
        rule = None if state is None else state[1]
        for r in np.flatnonzero(~done):
            src = f[r]  # v = x ± s: the same bits as torch.add / torch.sub (IEEE float)
            if rule == _RULES["error"]:
                src = np.add(f[r], state[0][r], out=v)
            elif rule == _RULES["estimate"]:
                src = np.subtract(f[r], state[0][r], out=v)
            np.abs(src, out=mag)
            np.copyto(sel, mag)
            sel.partition(n - k)  # in place, in the second row buffer
            thr = sel[n - k]
            np.greater_equal(mag, thr, out=m)
            if np.count_nonzero(m) != k:  # ties at the threshold: lowest positions first
                if np.isnan(mag).any():  # no magnitude order to keep by (numpy failed obscurely here)
                    raise ValueError(f"topk: instance {r} of the tensor holds NaN (has training diverged?)")
                np.greater(mag, thr, out=m)
                tied = np.flatnonzero(mag == thr)
                m[tied[: k - np.count_nonzero(m)]] = True
            np.compress(m, src, out=vals[r])
            bits[r] = np.packbits(m, bitorder="little")
            if rule == _RULES["estimate"]:  # s += the row's decoded values
                kernels.lanes().place_rows(bits[r : r + 1], spare.numpy()[r * k :], state[0][r : r + 1], add=True)
            elif rule is not None:  # the carried error: v where not kept, +0 where kept
                np.copyto(state[0][r], src)
                state[0][r][m] = 0.0
        return bits_t

    def _layout(self, payload: Payload) -> tuple[torch.dtype, tuple, int, int, int, int]:
        """(dtype, shape, positions mode, k, rows, n) of a payload, from its header."""
        dtype, shape, (mode, k) = read_shape(payload.header)
        rows, n = self._rows(torch.empty(shape, dtype=dtype, device="meta")).shape
        return dtype, shape, mode, k, rows, n

    def _mask(self, payload: Payload, ctx: Context) -> tuple[torch.dtype, tuple, int, int, int, torch.Tensor]:
        dtype, shape, mode, k, rows, n = self._layout(payload)
        if mode == 0:
            mask = unpack_mask(payload.parts[1], rows, n)
        else:
            idx = decode_positions(payload.parts[1], mode, rows, k, n)
            mask = ctx.zeros((rows, n), torch.bool, payload.device).scatter_(1, idx, True)
        return dtype, shape, rows, n, k, mask

    def decodes_kept_exactly(self) -> bool:
        return True

    def _bitmask(self, payload: Payload) -> np.ndarray | None:
        """The payload's bitmask as (rows, n/8) bytes, where the compiled kernels read it: a
        bitmask payload (not indices) of float32 values on the CPU, rows of whole bytes."""
        dtype, _, mode, _, rows, n = self._layout(payload)
        if mode != 0 or n % 8 or dtype != torch.float32 or payload.device.type != "cpu":
            return None
        return payload.parts[1].numpy().reshape(rows, n // 8)

    def write_unkept(self, payload: Payload, v: torch.Tensor, out: torch.Tensor, ctx: Context) -> bool:
        bits = self._bitmask(payload)
        if bits is None or v.dtype != torch.float32 or not (v.is_contiguous() and out.is_contiguous()):
            return False
        kernels.lanes().unkept_rows(bits, v.numpy().reshape(bits.shape[0], -1), out.numpy().reshape(bits.shape[0], -1))
        return True

    def decode_add(self, payload: Payload, out: torch.Tensor, ctx: Context, copy: torch.Tensor | None = None) -> bool:
        bits = self._bitmask(payload)
        tensors = (out,) if copy is None else (out, copy)
        if bits is None or any(t.dtype != torch.float32 or not t.is_contiguous() for t in tensors):
            return False
        values = part_as(payload.parts[0], torch.float32)
        rows = bits.shape[0]
        also = None if copy is None else copy.numpy().reshape(rows, -1)
        kernels.lanes().place_rows(bits, values.numpy(), out.numpy().reshape(rows, -1), add=True, copy=also)
        return True

    def kept_mask(self, payload: Payload, ctx: Context) -> torch.Tensor:
        _, shape, _, _, _, mask = self._mask(payload, ctx)
        return as_3d(mask.view(shape))

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        bits = self._bitmask(payload)
        values = part_as(payload.parts[0], torch.float32) if bits is not None else None
        if bits is not None and not values.requires_grad:  # from the bitmask, unpacked nowhere (lane_kernels.py)
            out = ctx.empty((bits.shape[0], bits.shape[1] * 8), torch.float32, payload.device)
            kernels.lanes().place_rows(bits, values.numpy(), out.numpy())
            return out.view(read_shape(payload.header)[1])
        dtype, shape, rows, n, k, mask = self._mask(payload, ctx)
        values = part_as(payload.parts[0], dtype)
        out = ctx.zeros((rows, n), dtype, payload.device)
        # values in row-major order of the mask = each row's kept positions in order
        if _numpy_ok(out) and mask.device.type == "cpu" and not values.requires_grad:
            np.place(out.numpy(), mask.numpy(), values.numpy())  # one pass, no index array (half the time)
        else:
            out.masked_scatter_(mask.to(payload.device), values)
        return out.view(shape)


RANDPERM_32BIT = (1 << 32) // 20  # torch.randperm (CPU) shuffles with 32-bit draws below this n


@cache
def _randperm_is_fisher_yates() -> bool:
    """Whether this torch's ``randperm`` is the forward Fisher–Yates over its generator's
    32-bit Mersenne Twister draws that :func:`randperm_prefix` reproduces (checked once)."""
    g = torch.Generator().manual_seed(0x5EED_0123_4567)
    want = torch.randperm(1000, generator=g)[:100].sort().values
    return torch.equal(randperm_prefix(g.manual_seed(0x5EED_0123_4567), 1000, 100, Context(), check=False), want)


def randperm_prefix(g: torch.Generator, n: int, k: int, ctx: Context, *, check: bool = True) -> torch.Tensor:
    """``torch.randperm(n, generator=g)[:k].sort().values`` (int64), without shuffling all n:
    torch's CPU randperm swaps entry i with entry i + draw mod (n − i) for i = 0 … n − 2, draws
    being its Mersenne Twister's 32-bit outputs (seeded with the low 32 bits of the seed, as
    numpy's legacy ``RandomState`` seeds the same generator), so entry i is final after step i
    and k steps give the first k (1.2 ms where randperm took 5-13 ms at n = 524,288). Where this
    torch shuffles otherwise (checked once against ``torch.randperm``) or n is past the 32-bit
    branch, torch's randperm itself. Same positions either way."""
    if check and not (k < n < RANDPERM_32BIT and _randperm_is_fisher_yates()):
        return torch.randperm(n, generator=g)[:k].sort().values
    draws = np.random.RandomState(g.initial_seed() & 0xFFFF_FFFF).randint(0, 1 << 32, size=k, dtype=np.uint32)
    pos = ctx.empty((k,), torch.int64, torch.device("cpu"))
    order = ctx.empty((n,), torch.int32, torch.device("cpu"))
    kept_at = ctx.empty((n,), torch.bool, torch.device("cpu"))
    kernels.permutation_prefix()(draws, order.numpy(), kept_at.numpy(), pos.numpy())
    return pos


class RandK(Compressor):
    """Keep ⌈(1−x)·N⌉ positions drawn from a seed both sides share: only values are sent.

    The same positions are used for every instance of the batch (one draw per step).
    ``scale: true`` multiplies by N/k (unbiased); the default keeps magnitudes as they are.
    """

    name = "randk"
    jacobian = "mask"

    def __init__(self, *, rate: float, scale: bool = False) -> None:
        self._rate = check_rate(rate)
        self.scale = bool(scale)

    def params(self) -> dict:
        return {"rate": self._rate, "scale": self.scale}

    @staticmethod
    def _positions(ctx: Context, n: int, k: int, device: torch.device) -> torch.Tensor:
        """The step's kept positions, drawn once per side and step (both sides draw the same)."""
        cached = ctx.state.get("_positions")
        if cached is not None and cached[0] == (ctx.step, n, k, str(device)):
            return cached[1]
        # drawn on the CPU (seeded, identical on every device and on both ends), then moved
        pos = randperm_prefix(ctx.generator(salt=1), n, k, ctx).to(device)
        ctx.state["_positions"] = ((ctx.step, n, k, str(device)), pos)
        return pos

    @staticmethod
    def _bitmask(ctx: Context, n: int, k: int) -> np.ndarray:
        """The step's kept positions as a bitmask of n bits (little-endian, as topk's payload
        packs its mask), for the compiled kernels; drawn once per side and step as well."""
        cached = ctx.state.get("_bitmask")
        if cached is not None and cached[0] == (ctx.step, n, k):
            return cached[1]
        mask = np.zeros(n, dtype=bool)
        mask[RandK._positions(ctx, n, k, torch.device("cpu")).numpy()] = True
        bits = np.packbits(mask, bitorder="little")
        ctx.state["_bitmask"] = ((ctx.step, n, k), bits)
        return bits

    def encode(self, x: torch.Tensor, ctx: Context) -> Payload:
        flat = x.detach().reshape(-1, x.shape[-2] * x.shape[-1]) if x.dim() >= 3 else x.detach().reshape(1, -1)
        rows, n = flat.shape
        k = kept(self._rate, n)
        if _compiled(flat) and n % 8 == 0:  # compiled, 8 entries at a time (lane_kernels.py)
            spare = ctx.empty((rows * k + 8,), flat.dtype, flat.device)  # the compaction's 8 spare slots
            kernels.lanes().compress_rows(flat.numpy(), self._bitmask(ctx, n, k), spare.numpy())
            return Payload([spare[: rows * k]], shape_header(x) + (k,))
        vals = ctx.empty((rows, k), flat.dtype, flat.device)
        torch.index_select(flat, 1, self._positions(ctx, n, k, flat.device), out=vals)
        return Payload([vals.view(-1)], shape_header(x) + (k,))

    def decodes_kept_exactly(self) -> bool:
        return not self.scale

    def kept_mask(self, payload: Payload, ctx: Context) -> torch.Tensor:
        _, shape, (k,) = read_shape(payload.header)
        n = shape[-2] * shape[-1] if len(shape) >= 3 else int(torch.Size(shape).numel())
        mask = torch.zeros(n, dtype=torch.bool, device=payload.device)
        mask[self._positions(ctx, n, k, payload.device)] = True
        _, rows_n, d = fold(shape)
        return mask.view(1, rows_n, d) if len(shape) >= 3 else as_3d(mask.view(shape))

    def vjp(self, grad: torch.Tensor, payload: Payload, ctx: Context) -> torch.Tensor:
        g = super().vjp(grad, payload, ctx)  # a fresh tensor (the boundary's buffer): scaled in place
        if self.scale:  # decode multiplies the kept values by N/k: so does its Jacobian
            _, shape, (k,) = read_shape(payload.header)
            n = shape[-2] * shape[-1] if len(shape) >= 3 else int(torch.Size(shape).numel())
            g.mul_(n / k)
        return g

    def decode(self, payload: Payload, ctx: Context) -> torch.Tensor:
        dtype, shape, (k,) = read_shape(payload.header)
        n = shape[-2] * shape[-1] if len(shape) >= 3 else int(torch.Size(shape).numel())
        rows = int(torch.Size(shape).numel()) // n
        vals = part_as(payload.parts[0], dtype).view(rows, k)
        grad = vals.requires_grad and torch.is_grad_enabled()
        if _compiled(vals) and n % 8 == 0 and not self.scale and not grad:  # compiled, 8 outputs at a time
            out = ctx.empty((rows, n), dtype, payload.device)
            bits = np.broadcast_to(self._bitmask(ctx, n, k), (rows, n // 8))  # every row: the same mask
            kernels.lanes().place_rows(bits, vals.numpy().reshape(-1), out.numpy())
            return out.view(shape)
        pos = self._positions(ctx, n, k, payload.device)
        if _numpy_ok(vals) and by_instance(vals) and not (vals.requires_grad and torch.is_grad_enabled()):
            # row by row: a row's zeros are still in cache when its kept values land
            out = ctx.empty((rows, n), dtype, payload.device)
            o, v, p = out.numpy(), vals.numpy(), pos.numpy()
            for r in range(rows):
                o[r].fill(0)
                o[r][p] = v[r] * (n / k) if self.scale else v[r]
            return out.view(shape)
        out = ctx.zeros((rows, n), dtype, payload.device)
        out.index_copy_(1, pos, vals * (n / k) if self.scale else vals)
        return out.view(shape)
