"""A Llama-3-style decoder (RMSNorm, RoPE, SwiGLU, causal attention), split into pipeline stages.

The full model is always built from the seed first and then sliced, so every stage
process, the single-process twin and any other run with the same seed hold the same
weights. Stage 0 holds the embedding, the last stage the final norm and the head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.config.schema import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim: int, ctx: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(ctx).float(), inv)  # (ctx, head_dim/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (b, h, t, hd); rotate pairs (even, odd)
    t = x.shape[2]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos[:t], sin[:t]
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, h = cfg.d_model, cfg.n_heads
        self.n_heads = h
        self.attn_norm = RMSNorm(d, cfg.norm_eps)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.ffn_norm = RMSNorm(d, cfg.norm_eps)
        self.gate = nn.Linear(d, cfg.ffn_hidden, bias=False)
        self.up = nn.Linear(d, cfg.ffn_hidden, bias=False)
        self.down = nn.Linear(cfg.ffn_hidden, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        h = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Stage(nn.Module):
    """Layers [first, last) of the decoder; embedding if it is stage 0, norm + head if last."""

    def __init__(
        self,
        cfg: ModelConfig,
        blocks: list[Block],
        embed: nn.Embedding | None,
        norm: RMSNorm | None,
        head: nn.Linear | None,
    ) -> None:
        super().__init__()
        self.embed, self.blocks, self.norm, self.head = embed, nn.ModuleList(blocks), norm, head
        cos, sin = rope_tables(cfg.d_model // cfg.n_heads, cfg.ctx, cfg.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            x = self.embed(x)
        for blk in self.blocks:
            x = blk(x, self.cos, self.sin)
        if self.head is not None:
            x = self.head(self.norm(x))
        return x


def build_llama_stages(cfg: ModelConfig, partition: list[int], seed: int) -> list[Stage]:
    """The whole built-in model from ``seed``, cut by ``partition`` (blocks per stage)."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        embed = nn.Embedding(cfg.vocab, cfg.d_model)
        blocks = [Block(cfg) for _ in range(cfg.n_layers)]
        norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        for mod in [embed, head, *blocks]:
            for name, p in mod.named_parameters():
                if p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * cfg.n_layers) if name.endswith(("proj.weight", "down.weight")) else 0.02
                    nn.init.normal_(p, std=std)
    finally:
        torch.random.set_rng_state(gen_state)
    stages, start = [], 0
    for i, count in enumerate(partition):
        last = i == len(partition) - 1
        stages.append(
            Stage(
                cfg,
                blocks[start : start + count],
                embed if i == 0 else None,
                norm if last else None,
                head if last else None,
            )
        )
        start += count
    return stages
