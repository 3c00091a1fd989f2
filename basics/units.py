"""Units of link parameters.

Bandwidth is in *bits* per second everywhere inside pipenem. tc's own spelling
is a trap: to tc, ``bps``/``kbps``/``mbps`` mean **bytes** per second, so
"80mbps" is 640 Mbit/s. We refuse those spellings instead of guessing.
"""

from __future__ import annotations

import math
import re

BANDWIDTH_UNITS: dict[str, float] = {"bit": 1.0, "Kbit": 1e3, "Mbit": 1e6, "Gbit": 1e9}
TIME_UNITS: dict[str, float] = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
LOSS_UNITS: dict[str, float] = {"%": 1.0}

_BYTE_SPELLINGS = {"bps", "kbps", "mbps", "gbps", "b/s", "kb/s", "mb/s", "gb/s", "byte", "kbyte", "mbyte", "gbyte"}

_NUM_UNIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z%/]*)\s*$")


def canonical_unit(kind: str, unit: str) -> str:
    """Return the canonical spelling of ``unit`` for a quantity ``kind``, or raise ValueError."""
    table = units_for(kind)
    if unit in table:
        return unit
    low = unit.lower()
    if kind == "bandwidth" and low in _BYTE_SPELLINGS:
        raise ValueError(
            f"unit {unit!r} is ambiguous: tc reads 'bps' as BYTES per second; "
            f"write bits: one of {', '.join(BANDWIDTH_UNITS)}"
        )
    for name in table:
        if name.lower() == low:
            return name
    raise ValueError(f"unknown unit {unit!r}; use one of {', '.join(table)}")


def units_for(kind: str) -> dict[str, float]:
    return {"bandwidth": BANDWIDTH_UNITS, "delay": TIME_UNITS, "jitter": TIME_UNITS, "loss": LOSS_UNITS}[kind]


def default_unit(kind: str) -> str | None:
    """Loss defaults to percent; bandwidth and times must say their unit."""
    return "%" if kind == "loss" else None


def split_quantity(text: str) -> tuple[float, str]:
    """'80Mbit' -> (80.0, 'Mbit'); '1.5 ms' -> (1.5, 'ms')."""
    m = _NUM_UNIT.match(text)
    if not m:
        raise ValueError(f"cannot read {text!r} as a number with a unit (e.g. '80Mbit', '20ms')")
    return float(m.group(1)), m.group(2)


def parse_duration(value: str | float | int) -> float:
    """A duration in seconds from '10s', '500ms' or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '10s'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        number, unit = split_quantity(value)
        seconds = number * TIME_UNITS[canonical_unit("delay", unit or "s")]
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration")
    if seconds <= 0:
        raise ValueError("must be > 0")
    return seconds


def format_rate(bps: float) -> str:
    """Human form of a rate in bit/s."""
    for unit in ("Gbit", "Mbit", "Kbit"):
        if bps >= BANDWIDTH_UNITS[unit]:
            return f"{bps / BANDWIDTH_UNITS[unit]:.1f} {unit}/s"
    return f"{bps:.0f} bit/s"
