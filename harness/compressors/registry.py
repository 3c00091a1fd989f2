"""Compressors by name: the built-ins, plug-ins (``register``, a ``pipenem.compressors`` entry
point, or ``pkg.mod:Class``), and :func:`build`, which turns a spec into a compressor."""

from __future__ import annotations

import importlib
from typing import Any

from basics.errors import ConfigError
from harness.compressors.base import Compressor
from harness.compressors.dense import Bf16, Fp16, NoCompression
from harness.compressors.feedback import EF21, ErrorFeedback
from harness.compressors.lowrank import AdaptiveLowRank, LowRank
from harness.compressors.mirror import Mirror
from harness.compressors.quantize import Quantize
from harness.compressors.sketch import Sketch
from harness.compressors.sparse import RandK, TopK
from harness.compressors.structured import ColumnMask, RowMask

BUILTINS: tuple[type[Compressor], ...] = (
    NoCompression,
    Fp16,
    Bf16,
    ErrorFeedback,
    EF21,
    LowRank,
    AdaptiveLowRank,
    Mirror,
    Quantize,
    Sketch,
    TopK,
    RandK,
    ColumnMask,
    RowMask,
)
REGISTRY: dict[str, type[Compressor]] = {cls.name: cls for cls in BUILTINS}


def register(cls: type[Compressor]) -> type[Compressor]:
    """Give a compressor class a short name (a class decorator for plug-ins)."""
    REGISTRY[cls.name] = cls
    return cls


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="pipenem.compressors")}


def resolve(name: str) -> type[Compressor]:
    """A registered name, a ``pipenem.compressors`` entry point, or ``pkg.mod:Class``."""
    if name in REGISTRY:
        return REGISTRY[name]
    eps = _entry_points()
    if name in eps:
        return eps[name].load()
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError("name", f"cannot import {name!r}: {exc}") from None
        if not (isinstance(obj, type) and issubclass(obj, Compressor)):
            raise ConfigError("name", f"{name!r} is not a Compressor subclass")
        return obj
    known = sorted(REGISTRY) + sorted(eps)
    raise ConfigError("name", f"unknown compressor {name!r}; known: {', '.join(known)} (or 'package.module:Class')")


def build(spec: str | dict[str, Any] | Compressor | None, field_name: str = "compressor") -> Compressor:
    """``'none'``, ``{name: column, rate: 0.9}``, ``{name: ef, inner: {...}}`` -> a Compressor."""
    if isinstance(spec, Compressor):
        return spec
    if spec is None:
        spec = "none"
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(field_name, "a compressor is a name or a mapping with 'name' and its parameters")
    params = dict(spec)
    name = params.pop("name")
    try:
        cls = resolve(str(name))
    except ConfigError as exc:
        raise ConfigError(f"{field_name}.{exc.field}", exc.message) from None
    if cls.wraps() and "inner" in params:  # a wrapper's inner spec is built first, named by its own path
        params["inner"] = build(params["inner"], f"{field_name}.inner")
    try:
        return cls(**params)
    except ConfigError as exc:
        raise ConfigError(f"{field_name}.{exc.field}", exc.message) from None
    except TypeError as exc:
        raise ConfigError(field_name, f"{name}: {exc}".replace("__init__() ", "")) from None
