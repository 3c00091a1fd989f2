"""A small ResNet for ``model: {factory: ...}``: ResNet-18's eight basic blocks on 8×8 images, cut in stages.

    model:
      factory: papers.mp_compression.resnet:build_stages
      args: {channels: 32}
      d_model: 32     # = channels: what crosses a boundary is (micro-batch, positions, channels)
      n_layers: 8     # basic blocks; `partition` gives stages their share (4 stages: 2 each)
      vocab: 10       # classes
      ctx: 64         # positions = 8 × 8
    data: {dataset: digits}

ResNet-18 (He et al. 2016) is a stem, eight basic blocks (two 3×3 conv + batch norm, identity
shortcut) in four widths with stride-2 downsampling, global average pooling and a linear
head. On 8×8 digits there is nothing to downsample, so every block keeps the width and the
8×8 grid: the boundaries then all carry one shape, as pipenem's boundaries expect. Stage 0
takes images (b, 1, 8, 8); every stage but the last returns its feature map as
(b, positions, channels) — the layout the compressors read as (instances, rows, columns), so
``column`` masks channels and ``row`` masks positions; the last returns class logits (b, 10).
Copy this file for your own CNN: keep the (b, positions, channels) boundary layout and build
the whole model from ``seed`` before slicing it (every process must hold the same weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(h)))


class ResNetStage(nn.Module):
    def __init__(
        self, blocks: list[BasicBlock], stem: nn.Module | None, head: nn.Linear | None, channels: int, side: int
    ) -> None:
        super().__init__()
        self.stem, self.blocks, self.head = stem, nn.ModuleList(blocks), head
        self.channels, self.side = channels, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            x = self.stem(x)
        else:  # (b, positions, channels) from the previous stage -> (b, channels, H, W)
            x = x.transpose(1, 2).reshape(x.shape[0], self.channels, self.side, self.side)
        for blk in self.blocks:
            x = blk(x)
        if self.head is not None:
            return self.head(x.mean(dim=(2, 3)))
        return x.flatten(2).transpose(1, 2).contiguous()


def build_stages(
    partition: list[int], seed: int, channels: int = 32, classes: int = 10, side: int = 8
) -> list[nn.Module]:
    """The whole network from ``seed`` (torch's default initialisation), cut by ``partition``."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
        blocks = [BasicBlock(channels) for _ in range(sum(partition))]
        head = nn.Linear(channels, classes)
    finally:
        torch.random.set_rng_state(gen_state)
    stages, start = [], 0
    for i, count in enumerate(partition):
        last = i == len(partition) - 1
        part = blocks[start : start + count]
        stages.append(ResNetStage(part, stem if i == 0 else None, head if last else None, channels, side))
        start += count
    return stages
