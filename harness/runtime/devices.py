"""Where stages compute with real compute: torch devices (modeled compute's device profiles:
``harness/config/profiles.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from basics.errors import ConfigError

if TYPE_CHECKING:
    import torch


def check_torch_device(device: str) -> None:
    """Refuse a GPU that is not there (ConfigError naming compute.device), before any bring-up."""
    if device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(
            "compute.device",
            f"{device!r} asks for a GPU, but torch sees none here (torch {torch.__version__}, {build}); "
            "use compute.device: cpu, or run where a GPU is visible",
        )
    count = torch.cuda.device_count()
    if device.startswith("cuda:") and int(device.split(":")[1]) >= count:
        raise ConfigError("compute.device", f"{device!r}: this machine has {count} GPU(s), cuda:0 … cuda:{count - 1}")


def stage_device(device: str, stage: int) -> torch.device:
    """The torch device stage ``stage`` computes on (``auto``: GPU stage mod count)."""
    import torch

    if device == "auto":
        return torch.device("cuda", stage % torch.cuda.device_count())
    return torch.device(device)
