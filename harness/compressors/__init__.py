"""Compressors for pipeline-stage boundaries: one protocol, exact wire payloads.

    from harness.compressors import build
    c = build({"name": "column", "rate": 0.9})
    payload = c.encode(x, Context(boundary=1, direction="forward"))
    x_hat = c.decode(payload, ctx)

See README.md here for the protocol and how to write your own.
"""

from harness.compressors.base import Compressor, Context, wire_ratio
from harness.compressors.registry import REGISTRY, build, register, resolve
from harness.compressors.wire import Payload

__all__ = ["REGISTRY", "Compressor", "Context", "Payload", "build", "register", "resolve", "wire_ratio"]
