"""The few header ints every payload carries to rebuild its tensor: dtype and shape."""

from __future__ import annotations

import torch

from harness.compressors.wire import DTYPE_CODES, DTYPES


def shape_header(x: torch.Tensor) -> tuple[int, ...]:
    return (DTYPE_CODES[x.dtype], x.dim(), *x.shape)  # the wire format's one dtype table


def read_shape(header: tuple[int, ...]) -> tuple[torch.dtype, tuple[int, ...], tuple[int, ...]]:
    """(dtype, shape, the rest of the header)."""
    ndim = header[1]
    return DTYPES[header[0]], tuple(header[2 : 2 + ndim]), header[2 + ndim :]


def fold(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The (b, n, d) view of a shape, as :func:`as_3d` makes it."""
    if len(shape) == 1:
        return 1, 1, shape[0]
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    b = 1
    for s in shape[:-2]:
        b *= s
    return b, shape[-2], shape[-1]
