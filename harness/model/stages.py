"""The stages of any model a run names — the built-in decoder (``builtin.py``), a transformers
model (``hf.py``) or a user factory (``factory.py``) — with their geometry (what crosses a
boundary) and forward FLOPs (what modeled compute charges). Every process builds the same ones."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from harness.config.schema import AnyModel, FactoryModelConfig, HFModelConfig, ModelConfig
from harness.model.builtin import build_llama_stages


@dataclass(frozen=True)
class Geometry:
    """The sizes of a model that runs, results and boundaries need, whatever kind it is (a
    transformers model's come from its config)."""

    label: str  # builtin | hf:<type> | factory:<module:function>
    d_model: int  # width of the activations crossing every boundary (b, ctx, d_model)
    n_layers: int  # blocks ``partition`` distributes
    vocab: int
    ctx: int
    norm_eps: float | None  # recorded only (None where the model does not say)


def geometry(cfg: AnyModel) -> Geometry:
    """The model's geometry; for ``hf:`` its transformers config is built (ConfigError on bad fields)."""
    if isinstance(cfg, HFModelConfig):
        from harness.model.hf import build_config

        built = build_config(cfg.hf, cfg.config)
        eps = getattr(built, "rms_norm_eps", None) or getattr(built, "layer_norm_epsilon", None)
        return Geometry(
            cfg.label, int(built.hidden_size), int(built.num_hidden_layers), int(built.vocab_size), cfg.ctx, eps
        )
    return Geometry(cfg.label, cfg.d_model, cfg.n_layers, cfg.vocab, cfg.ctx, cfg.norm_eps)


def build_stages(cfg: AnyModel, partition: list[int], seed: int) -> list[nn.Module]:
    """The stages of ``cfg`` cut by ``partition`` (blocks per stage), weights from ``seed``."""
    if isinstance(cfg, HFModelConfig):
        from harness.model.hf import build_hf_stages

        return build_hf_stages(cfg.hf, cfg.config, partition, seed)
    if isinstance(cfg, FactoryModelConfig):
        from harness.model.factory import build_factory_stages

        return build_factory_stages(cfg, partition, seed)
    return build_llama_stages(cfg, partition, seed)


def stage_flops(
    cfg: AnyModel,
    geo: Geometry,
    n_blocks: int,
    tokens: int,
    last: bool,
    stage: nn.Module | None = None,
) -> float:
    """Forward FLOPs of a stage for ``tokens`` tokens (matmuls + causal attention). Other
    models than the built-in one are counted from the ``stage`` module: 2 FLOPs per weight
    (embeddings excluded: a lookup) and token, plus causal attention per block."""
    if not isinstance(cfg, ModelConfig):
        assert stage is not None
        weights = sum(
            p.numel() for m in stage.modules() if not isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)
        )
        return float(2 * weights * tokens + n_blocks * 2 * 2 * (geo.ctx / 2) * geo.d_model * tokens)
    d, f, t = cfg.d_model, cfg.ffn_hidden, cfg.ctx
    per_token_block = 2 * (3 * d * d + d * d + 3 * d * f) + 2 * 2 * (t / 2) * d  # weights + causal QKᵀ, AV
    flops = n_blocks * per_token_block * tokens
    if last:
        flops += 2 * d * cfg.vocab * tokens
    return float(flops)
