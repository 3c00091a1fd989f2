"""Compressor × rate: which specs a sweep makes of a compressor, as the class describes itself.

Suites fill the rate axis into every compressor that takes a rate (:func:`with_rate`);
``pipenem fidelity`` sweeps each compressor over its rates or, for rate-less ones, its
``sweep`` values (:func:`fidelity_specs`). One place, so both expand a plug-in alike.
"""

from __future__ import annotations

import itertools
from typing import Any

from basics.errors import ConfigError
from harness.compressors.registry import REGISTRY, resolve


def with_rate(c: Any, rate: float | None) -> Any:
    """``c`` with ``rate`` filled in where it takes one and has none; otherwise ``c`` unchanged."""
    if rate is None:
        return c
    d = {"name": c} if isinstance(c, str) else c
    if not isinstance(d, dict) or "name" not in d:
        return c
    try:
        cls = resolve(str(d["name"]))
    except ConfigError:
        return c  # validation names the unknown compressor, with the axis value
    if cls.takes_rate() and "rate" not in d and not any(k in d for k in cls.rate_instead):
        return {**d, "rate": rate}
    if cls.wraps() and "inner" in d:
        inner = with_rate(d["inner"], rate)
        if inner != d["inner"]:
            return {**d, "inner": inner}
    return c


def takes_rate(c: Any) -> bool:
    """Whether a rate axis applies: a compressor with a rate parameter that has none yet."""
    return with_rate(c, 0.5) != c


def standalone_names() -> list[str]:
    """Every registered compressor that works on its own, plus error feedback around TopK
    (``pipenem fidelity``'s default list)."""
    names = [n for n, cls in REGISTRY.items() if not cls.backward_only and not cls.wraps()]
    return [*names, "ef:topk"]


def fidelity_specs(name: str, rates: list[float]) -> list[dict]:
    """The configurations a fidelity table sweeps for one compressor name (``ef:NAME`` wraps
    NAME): its rates if it takes one, else its ``sweep`` values, else as is."""
    wrapper, _, inner = name.partition(":")
    cls = resolve(wrapper)
    if inner and cls.wraps():
        return [{"name": wrapper, "inner": s} for s in fidelity_specs(inner, rates)]
    if cls.takes_rate():
        return [{"name": name, "rate": r} for r in rates]
    keys = list(cls.sweep)
    return [
        {"name": name, **dict(zip(keys, values, strict=True))} for values in itertools.product(*cls.sweep.values())
    ] or [{"name": name}]
