"""``model: {factory: "pkg.mod:build_stages", ...}``: stages from the user's own function.

The function is imported by its path (as third-party compressors are) and called as
``build_stages(partition, seed, **args)``; it returns one ``nn.Module`` per stage. Stage 0
takes token ids (b, ctx) int64 — or images (b, 1, H, W) with an image dataset — every other
stage the previous one's output; every stage but the last returns (b, ctx, d_model)
activations (what crosses a link; a CNN's feature map as (b, positions, channels)), the last
returns logits (b, ctx, vocab), or (b, classes) for images. It must build the same weights
from the same seed in every process (the stages and the twin each call it).
``examples/factory_model.py`` is a complete language model, ``papers/mp_compression/resnet.py``
a complete CNN.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from basics.errors import ConfigError
from harness.config.schema import FactoryModelConfig


def load_factory(path: str) -> Callable[..., list[nn.Module]]:
    module, _, name = path.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError("model.factory", f"cannot import {module!r}: {exc} (is it on PYTHONPATH?)") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise ConfigError("model.factory", f"{module!r} has no function {name!r}")
    return fn


def build_factory_stages(cfg: FactoryModelConfig, partition: list[int], seed: int) -> list[nn.Module]:
    stages = load_factory(cfg.factory)(list(partition), seed, **cfg.args)
    if not isinstance(stages, list | tuple) or len(stages) != len(partition):
        got = len(stages) if isinstance(stages, list | tuple) else type(stages).__name__
        raise ConfigError("model.factory", f"{cfg.factory} returned {got}, expected a list of {len(partition)} stages")
    for i, s in enumerate(stages):
        if not isinstance(s, nn.Module):
            raise ConfigError("model.factory", f"{cfg.factory}: stage {i} is a {type(s).__name__}, not an nn.Module")
    return list(stages)
