"""What seed 003 is to pipenem: its title, the suites that reproduce it, what it published."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from basics.shipped import shipped
from basics.yamlfile import read_yaml
from reports.figures import Published

NAME = "mp-compression"
TITLE = "Activations and Gradients Compression for Model-Parallel Training"
SHORT = "seed 003 (Rudakov et al.)"
# every tier: the image model's suite, then the language model's
SUITES = {
    "quick": ("suites/mp-compression-cnn-quick.yaml", "suites/mp-compression-lm-quick.yaml"),
    "paper": ("suites/mp-compression-cnn.yaml", "suites/mp-compression-lm.yaml"),
}
TIERS = {
    "quick": "quick: ResNet-8-block on digits + LM d=64, 3 seeds",
    "paper": "the paper's levels, 5 seeds: ResNet 64 channels, LM d=128 L=8",
}
PUBLISHED = Published(
    name="seed 003",
    palette={
        "topk-fwd+bwd": "tab:red",
        "topk-fwd": "tab:orange",
        "topk-bwd": "tab:purple",
        "quantize2-fwd": "tab:cyan",
        "quantize2-bwd": "tab:blue",
        "ef-topk-fwd+bwd": "tab:brown",
        "ef21-topk-fwd+bwd": "tab:olive",
    },
)


def suite_file(rel: str) -> Path:
    """One of this paper's suites as pipenem ships it (checkout or installed wheel)."""
    return shipped("suite", Path(rel).stem)


@cache
def suite_names() -> frozenset[str]:
    """The ``name:`` of every suite this paper's claims are about."""
    return frozenset(read_yaml(suite_file(f), "suite")["name"] for tier in SUITES.values() for f in tier)
