"""Hugging Face ``transformers`` causal LMs as pipeline stages, built from a config alone.

``model: {hf: llama, config: {hidden_size: 64, ...}, ctx: 128}`` builds
``AutoModelForCausalLM.from_config`` (random init from the run's seed; no weights, no hub:
``HF_HUB_OFFLINE`` is set before transformers is imported) and cuts it by decoder layer:
the embedding (and GPT-2's position embedding) on the first stage, the final norm and the
head on the last, ``partition`` as for the built-in model. Two families are split:

- Llama-like (``model.embed_tokens / layers / norm / rotary_emb``): Llama, Qwen2, Mistral, …
- GPT-2-like (``transformer.wte / wpe / h / ln_f``).

Each stage runs its layers as the whole model's forward does (the same rotary tables,
causal attention with no mask); a test checks that the chained stages give the whole
model's logits. Two defaults differ from transformers', for the pipeline's sake, and are
overridable: dropout 0 (one process and many draw dropout masks from different RNG
streams, so twin and distributed runs could not be compared) and untied input/output
embeddings (the first and last stage cannot share a weight without an extra all-reduce;
asking for ``tie_word_embeddings: true`` on more than one stage is refused).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from basics.errors import ConfigError

DROPOUT_KEYS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "hidden_dropout", "dropout")


def transformers_module() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded at run time
    try:
        import transformers
    except ImportError:
        raise ConfigError("model.hf", "needs transformers: pip install 'pipenem[hf]'") from None
    return transformers


def build_config(model_type: str, overrides: dict[str, Any]) -> Any:
    """The transformers config for ``model_type`` with ``overrides``; unknown keys refused by name
    (transformers itself would keep a typo such as ``hidden_szie`` as a silent attribute)."""
    if "/" in model_type:
        raise ConfigError(
            "model.hf",
            f"{model_type!r} looks like a hub repository; pipenem builds a model from its config alone "
            "and downloads nothing: give the model type (e.g. llama, gpt2, qwen2, mistral) and `config:`",
        )
    tf = transformers_module()
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ConfigError("model.hf", f"{model_type!r} is not a transformers model type")
    cls = CONFIG_MAPPING[model_type]
    known = set(cls().to_dict()) | set(getattr(cls, "attribute_map", {}))
    for key in overrides:
        if key not in known:
            raise ConfigError(f"model.config.{key}", f"not a field of transformers' {cls.__name__}")
    values = {k: 0.0 for k in DROPOUT_KEYS if k in known}
    values["tie_word_embeddings"] = False
    # special-token ids of the original vocabulary (gpt2's 50256) are never used on pipenem's
    # data; outside a small vocabulary they only make transformers warn: unset, unless given
    defaults = cls()
    vocab = overrides.get("vocab_size", getattr(defaults, "vocab_size", None))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        tid = getattr(defaults, key, None)
        if isinstance(tid, int) and isinstance(vocab, int) and tid >= vocab:
            values[key] = None
    values.update(overrides)
    cfg = tf.AutoConfig.for_model(model_type, **values)
    cfg._attn_implementation = "sdpa"
    return cfg


def _family(model: nn.Module) -> str:
    base = model.base_model
    if all(hasattr(base, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return "llama"
    if all(hasattr(base, a) for a in ("wte", "wpe", "h", "ln_f")):
        return "gpt2"
    raise ConfigError(
        "model.hf",
        f"{type(model).__name__}: pipenem splits decoder-only models with embed_tokens/layers/norm/rotary_emb "
        "(Llama, Qwen2, Mistral, …) or wte/wpe/h/ln_f (GPT-2)",
    )


class HFStage(nn.Module):
    """Decoder layers [first, last) of a transformers causal LM, with the embedding on stage 0
    and the final norm + head on the last stage."""

    def __init__(self, family: str, model: nn.Module, layers: list[nn.Module], first: bool, last: bool) -> None:
        super().__init__()
        base = model.base_model
        self.family = family
        self.layers = nn.ModuleList(layers)
        self.embed = (base.embed_tokens if family == "llama" else base.wte) if first else None
        self.pos_embed = base.wpe if family == "gpt2" and first else None
        self.rotary = base.rotary_emb if family == "llama" else None  # parameter-free: each stage holds it
        self.norm = (base.norm if family == "llama" else base.ln_f) if last else None
        self.head = model.lm_head if last else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            pos = torch.arange(x.shape[1], device=x.device)
            h = self.embed(x)
            if self.pos_embed is not None:
                h = h + self.pos_embed(pos)
        else:
            h = x
        if self.layers:
            pos = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
            kw: dict[str, Any] = {}
            if self.rotary is not None:
                kw = {"position_ids": pos, "position_embeddings": self.rotary(h, pos)}
            for layer in self.layers:
                out = layer(h, attention_mask=None, **kw)  # no mask: SDPA applies the causal mask itself
                h = out[0] if isinstance(out, tuple) else out
        if self.head is not None:
            h = self.head(self.norm(h))
        return h


def build_hf_stages(model_type: str, overrides: dict[str, Any], partition: list[int], seed: int) -> list[HFStage]:
    """The whole model from ``seed`` (as every stage process builds it), cut by ``partition``."""
    tf = transformers_module()
    cfg = build_config(model_type, overrides)
    if cfg.tie_word_embeddings and len(partition) > 1:
        raise ConfigError(
            "model.config.tie_word_embeddings",
            "the embedding (first stage) and the head (last stage) cannot share a weight across stages",
        )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = tf.AutoModelForCausalLM.from_config(cfg)
    finally:
        torch.random.set_rng_state(state)
    model.train()
    family = _family(model)
    layers = list(model.base_model.layers if family == "llama" else model.base_model.h)
    stages, start = [], 0
    for i, count in enumerate(partition):
        stages.append(HFStage(family, model, layers[start : start + count], i == 0, i == len(partition) - 1))
        start += count
    return stages


def whole_model_logits(model_type: str, overrides: dict[str, Any], seed: int, ids: torch.Tensor) -> torch.Tensor:
    """The unsplit model's logits (for the split == whole check)."""
    tf = transformers_module()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = tf.AutoModelForCausalLM.from_config(build_config(model_type, overrides))
    finally:
        torch.random.set_rng_state(state)
    return model(input_ids=ids).logits
