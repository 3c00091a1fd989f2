"""Device profiles for ``compute: modeled``: how long a stage's FLOPs take on a named device.

A profile is peak FLOP/s × an efficiency factor (the fraction of peak a small
Llama layer reaches). The built-in ``a10g`` uses NVIDIA's published dense BF16
tensor peak for the A10G (125 TFLOP/s; 250 is the sparse figure) and an assumed
efficiency of 0.35. A measured profile is a
YAML file with ``name``, ``peak_flops`` and ``efficiency``, or directly
``flops_per_s`` (what you measured). Results record the profile used; a modeled
step's compute time is never reported as measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from testbed.errors import ConfigError


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    peak_flops: float
    efficiency: float
    source: str

    @property
    def flops_per_s(self) -> float:
        return self.peak_flops * self.efficiency

    def seconds(self, flops: float) -> float:
        return flops / self.flops_per_s


BUILTIN = {
    # A10G datasheet: 31.2 TFLOP/s FP32, 125 TFLOP/s BF16 tensor (dense; 250 with sparsity).
    "a10g": DeviceProfile(
        "a10g", 125e12, 0.35, "NVIDIA A10G datasheet, BF16 tensor dense peak; efficiency 0.35 assumed"
    ),
    "a10g-fp32": DeviceProfile("a10g-fp32", 31.2e12, 0.5, "NVIDIA A10G datasheet, FP32 peak; efficiency 0.5 assumed"),
    "h100": DeviceProfile("h100", 989e12, 0.35, "NVIDIA H100 SXM datasheet, BF16 dense peak; efficiency 0.35 assumed"),
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
            "compute.device", f"unknown device {name_or_path!r}: one of {', '.join(BUILTIN)} or a profile YAML file"
        )
    data = yaml.safe_load(path.read_text()) or {}
    try:
        if "flops_per_s" in data:
            return DeviceProfile(
                str(data.get("name", path.stem)), float(data["flops_per_s"]), 1.0, f"measured ({path})"
            )
        return DeviceProfile(
            str(data.get("name", path.stem)), float(data["peak_flops"]), float(data["efficiency"]), f"profile {path}"
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            "compute.device", f"{path}: needs flops_per_s, or peak_flops and efficiency ({exc})"
        ) from None
