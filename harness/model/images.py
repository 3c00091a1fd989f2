"""An image dataset that ships with pipenem: the UCI optical handwritten digits (8×8, 1,797 images).

``digits.csv.gz`` is the copy scikit-learn bundles (``sklearn.datasets.load_digits``: the test
set of the UCI "Optical Recognition of Handwritten Digits" data, E. Alpaydin and C. Kaynak,
1998, CC BY 4.0): 64 pixel counts in 0..16 and the label per line. It is 57 KB, so it ships
here instead of making scikit-learn a dependency; nothing is downloaded.

The train/held-out split is one fixed permutation (the same held-out images for every run
seed, so seeds vary training, not the test set); pixels are scaled by 1/16 and standardised
with the training images' mean and std. No augmentation.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from basics.errors import ConfigError

SIDE = 8
SPLIT_SEED = 20_240_115  # the fixed split's permutation (not a run's seed)


@dataclass(frozen=True)
class ImageSet:
    """Images (n, 1, H, W) float32 and their labels (n,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def load_digits(eval_fraction: float) -> tuple[ImageSet, ImageSet]:
    """(train, held-out) digits; ``eval_fraction`` of the 1,797 images are held out."""
    with resources.files("harness.model").joinpath("digits.csv.gz").open("rb") as f:
        table = np.loadtxt(gzip.open(f), delimiter=",", dtype=np.float32)
    pixels, labels = table[:, :-1] / 16.0, table[:, -1].astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_eval = max(1, round(len(labels) * eval_fraction))
    held, train = order[:n_eval], order[n_eval:]
    mean, std = pixels[train].mean(), pixels[train].std()

    def part(idx: np.ndarray) -> ImageSet:
        x = torch.from_numpy((pixels[idx] - mean) / std).reshape(-1, 1, SIDE, SIDE).contiguous()
        return ImageSet(x, torch.from_numpy(labels[idx]))

    return part(train), part(held)


class ImageBatches:
    """Seeded batches of images: the same (seed, step) -> the same batch in every process. Each
    step draws ``batch`` distinct images (an epoch's order is not kept: as the text batcher, a
    step is a fresh draw)."""

    def __init__(self, data: ImageSet, batch: int, seed: int) -> None:
        if batch > len(data):
            raise ConfigError("train.batch", f"{batch} is more than the {len(data)} training images")
        self.data, self.batch, self.seed = data, batch, seed

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        idx = torch.randperm(len(self.data), generator=g)[: self.batch]
        return self.data.images[idx], self.data.labels[idx]


def held_out_batches(data: ImageSet, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The whole held-out set, in order, in batches of ``size`` (the last one may be smaller)."""
    return [(data.images[i : i + size], data.labels[i : i + size]) for i in range(0, len(data), size)]
