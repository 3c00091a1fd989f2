"""A complete user model for ``model: {factory: ...}``: a small GRU language model, split by layer.

    model:
      factory: examples.factory_model:build_stages   # run from the repository root (or put it on PYTHONPATH)
      args: {hidden: 64}
      d_model: 64        # what crosses a boundary: (micro-batch, ctx, 64)
      n_layers: 4        # GRU layers; `partition` gives stages their share, as for the built-in model
      vocab: 256         # byte-level data
      ctx: 64

Rules: ``build_stages(partition, seed, **args)`` returns one module per stage; stage 0 takes
token ids, the others the previous stage's output; the last returns logits. Build the whole
model from ``seed`` and slice it, so every process (and the twin) holds the same weights.
"""

from __future__ import annotations

import torch
from torch import nn


class GRUStage(nn.Module):
    def __init__(self, layers: list[nn.GRU], embed: nn.Embedding | None, head: nn.Linear | None) -> None:
        super().__init__()
        self.embed, self.layers, self.head = embed, nn.ModuleList(layers), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            x = self.embed(x)
        for layer in self.layers:
            x = x + layer(x)[0]  # residual: keeps a deep stack trainable
        return self.head(x) if self.head is not None else x


def build_stages(partition: list[int], seed: int, hidden: int = 64, vocab: int = 256) -> list[nn.Module]:
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        embed = nn.Embedding(vocab, hidden)
        layers = [nn.GRU(hidden, hidden, batch_first=True) for _ in range(sum(partition))]
        head = nn.Linear(hidden, vocab)
    finally:
        torch.random.set_rng_state(gen_state)
    stages, start = [], 0
    for i, count in enumerate(partition):
        last = i == len(partition) - 1
        stages.append(GRUStage(layers[start : start + count], embed if i == 0 else None, head if last else None))
        start += count
    return stages
