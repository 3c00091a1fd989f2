"""Device profiles of modeled compute (``compute: modeled``): how long a stage's FLOPs take on a
named device (real compute's torch devices: ``harness/runtime/devices.py``).

A profile is peak FLOP/s × an efficiency factor (the fraction of peak a small
Llama layer reaches). The built-in ``a10g`` uses NVIDIA's published dense BF16
tensor peak for the A10G (125 TFLOP/s; 250 is the sparse figure) and an assumed
efficiency of 0.35. A measured profile is a
YAML file with ``name``, ``peak_flops`` and ``efficiency``, or directly
``flops_per_s`` (what you measured); ``mem_bandwidth`` (bytes/s) lets ``compute.codec:
modeled`` charge encode/decode the bytes they touch. Results record the profile used; a
modeled step's compute time is never reported as measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from basics.errors import ConfigError
from basics.yamlfile import read_yaml


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    peak_flops: float
    efficiency: float
    source: str
    mem_bandwidth: float | None = None  # bytes/s (datasheet peak), for compute.codec: modeled

    @property
    def flops_per_s(self) -> float:
        return self.peak_flops * self.efficiency

    def seconds(self, flops: float) -> float:
        return flops / self.flops_per_s

    def codec_seconds(self, dense_bytes: int, payload_bytes: int) -> float:
        """One encode or decode: it reads one side and writes the other, once (a lower bound:
        a compressor that makes several passes over the tensor takes longer)."""
        assert self.mem_bandwidth is not None
        return (dense_bytes + payload_bytes) / self.mem_bandwidth


BUILTIN = {
    # A10G datasheet: 31.2 TFLOP/s FP32, 125 TFLOP/s BF16 tensor (dense; 250 with sparsity).
    # Memory: A10G 600 GB/s (GDDR6), H100 SXM 3.35 TB/s (HBM3), datasheet peaks.
    "a10g": DeviceProfile(
        "a10g", 125e12, 0.35, "NVIDIA A10G datasheet, BF16 tensor dense peak; efficiency 0.35 assumed", 600e9
    ),
    "a10g-fp32": DeviceProfile(
        "a10g-fp32", 31.2e12, 0.5, "NVIDIA A10G datasheet, FP32 peak; efficiency 0.5 assumed", 600e9
    ),
    "h100": DeviceProfile(
        "h100", 989e12, 0.35, "NVIDIA H100 SXM datasheet, BF16 dense peak; efficiency 0.35 assumed", 3.35e12
    ),
    # Not a device: a condition. At 100 GFLOP/s one layer of the CI throughput model (d=512,
    # 2×1024 tokens) computes a micro-batch forward+backward in ~0.45 s, about what its
    # activations take over 80 Mbit (0.44 s): compute ≈ comm, where a 10× wire ratio gains ~2×.
    "compute-heavy": DeviceProfile(
        "compute-heavy",
        100e9,
        1.0,
        "a condition, not a device: 100 GFLOP/s so that compute ≈ comm on the CI comm-bound profile",
    ),
}


def load_profile(name_or_path: str) -> DeviceProfile:
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            "compute.profile",
            f"unknown device profile {name_or_path!r}: one of {', '.join(BUILTIN)} or a profile YAML file",
        )
    try:
        data = read_yaml(path, "device profile")
    except ConfigError as exc:
        raise ConfigError("compute.profile", exc.message, str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError(
            "compute.profile", "a profile is a mapping (flops_per_s, or peak_flops and efficiency)", str(path)
        )

    def number(key: str, lo: float = 0.0, hi: float = math.inf) -> float:
        try:
            v = float(data[key])
        except (TypeError, ValueError):
            raise ConfigError(f"compute.profile.{key}", f"{data[key]!r} is not a number", str(path)) from None
        if not (lo < v <= hi) or not math.isfinite(v):
            raise ConfigError(f"compute.profile.{key}", f"{v:g} must be in ({lo:g}, {hi:g}]", str(path))
        return v

    bw = number("mem_bandwidth") if "mem_bandwidth" in data else None
    name = str(data.get("name", path.stem))
    if "flops_per_s" in data:
        return DeviceProfile(name, number("flops_per_s"), 1.0, f"measured ({path})", bw)
    missing = [k for k in ("peak_flops", "efficiency") if k not in data]
    if missing:
        raise ConfigError(
            f"compute.profile.{missing[0]}",
            "needs flops_per_s, or peak_flops and efficiency; mem_bandwidth optional",
            str(path),
        )
    return DeviceProfile(name, number("peak_flops"), number("efficiency", hi=1.0), f"profile {path}", bw)


def device_label(mode: str, device: str, profile: str) -> str:
    """What a result row's ``device`` says: the profile of modeled compute, or the torch device."""
    return load_profile(profile).name if mode == "modeled" else f"{device} (real compute)"
