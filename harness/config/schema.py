"""Validated configuration of one pipeline run (model, data, schedule, compression, compute).

A :class:`RunSpec` is self-contained and serializable: topology + config + seed. The
launcher writes it to JSON for the stage workers; a sweep hands it to an executor. This is the
schema alone: what needs the topology, the model's library or the compressors is checked once
per run by ``harness.runtime.check.check_run``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from basics.errors import ConfigError, FieldError, from_validation
from basics.shipped import find
from basics.yamlfile import read_yaml
from harness.config.profiles import BUILTIN

PAPER_HEADS = 24


class _Strict(BaseModel):
    # allow_inf_nan=False: `lr: .inf` is refused here, not by a worker after bring-up
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelConfig(_Strict):
    """Llama-3-style decoder. The paper: d=512, 8 layers, 24 heads (not a divisor of 512:
    ``ModelConfig.paper()`` uses 16, the nearest valid count, and says so), ctx 1024."""

    d_model: int = Field(512, ge=8)
    n_layers: int = Field(8, ge=1)
    n_heads: int = Field(16, ge=1)
    ffn_hidden: int | None = None  # default: Llama's rule, 8/3·d rounded up to a multiple of 64
    vocab: int = Field(256, ge=2)  # byte-level tokenizer
    ctx: int = Field(1024, ge=2)
    rope_theta: float = 10000.0
    # RMSNorm's ε. It bounds the norm's gradient at an all-zero input (~1/√ε: 316× at 1e-5),
    # which is what a row-masked boundary feeds the next stage (README: row masking).
    norm_eps: float = Field(1e-5, gt=0)

    @property
    def label(self) -> str:
        return "builtin"

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise FieldError(
                "n_heads",
                f"{self.n_heads} does not divide d_model {self.d_model}; "
                f"valid head counts: {', '.join(str(h) for h in divisors(self.d_model) if h <= 64)}",
            )
        if (self.d_model // self.n_heads) % 2:
            raise FieldError("n_heads", "head dimension must be even for RoPE")
        if self.ffn_hidden is None:
            self.ffn_hidden = 64 * -(-int(8 * self.d_model / 3) // 64)
        return self

    @classmethod
    def paper(cls) -> tuple[ModelConfig, str]:
        heads = nearest_valid_heads(512, PAPER_HEADS)
        note = f"the paper's 24 heads do not divide d=512; using {heads} (nearest valid, head dim {512 // heads})"
        return cls(d_model=512, n_layers=8, n_heads=heads, ctx=1024), note


class HFModelConfig(_Strict):
    """A Hugging Face transformers causal LM from its config alone (random init, offline):
    ``{hf: llama, config: {hidden_size: 64, ...}, ctx: 128}`` (see ``harness/model/hf.py``). Its
    width, depth and vocabulary are the transformers config's: ``harness.model.geometry`` reads them."""

    hf: str  # a transformers model type: gpt2, llama, qwen2, mistral, …
    config: dict[str, Any] = {}  # fields of that model type's config (typos refused)
    ctx: int = Field(1024, ge=2)  # the sequence length pipenem trains and serves at

    @property
    def label(self) -> str:
        return f"hf:{self.hf}"


class FactoryModelConfig(_Strict):
    """Any stages a user function builds: ``{factory: "pkg.mod:build_stages", args: {...}, d_model,
    n_layers, vocab, ctx}``. The function is called as ``build_stages(partition, seed, **args)``
    and returns one module per stage (see ``examples/factory_model.py``)."""

    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    args: dict[str, Any] = {}
    d_model: int = Field(ge=1)  # width of the tensors crossing the boundaries (b, ctx, d_model)
    n_layers: int = Field(ge=1)  # blocks ``partition`` distributes
    vocab: int = Field(ge=2)
    ctx: int = Field(1024, ge=2)
    norm_eps: float | None = None  # recorded only

    @property
    def label(self) -> str:
        return f"factory:{self.factory}"


def _model_kind(v: Any) -> str:
    """Which model a ``model:`` mapping describes: ``hf:`` or ``factory:`` keys, else the built-in."""
    if isinstance(v, dict):
        kind = "hf" if "hf" in v else "factory" if "factory" in v else "builtin"
    else:
        kind = "hf" if isinstance(v, HFModelConfig) else "factory" if isinstance(v, FactoryModelConfig) else "builtin"
    return f"union:{kind}"


AnyModel = Annotated[
    Annotated[ModelConfig, Tag("union:builtin")]
    | Annotated[HFModelConfig, Tag("union:hf")]
    | Annotated[FactoryModelConfig, Tag("union:factory")],
    Discriminator(_model_kind),
]


def divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def nearest_valid_heads(d: int, wanted: int) -> int:
    """The divisor of d (with an even head dim) closest to ``wanted``; ties go to fewer, wider heads."""
    valid = [h for h in divisors(d) if (d // h) % 2 == 0]
    return min(valid, key=lambda h: (abs(h - wanted), h))


IMAGE_CLASSES = {"digits": 10}  # the image datasets and their class counts (harness/model/images.py)


class DataConfig(_Strict):
    # digits: images (8×8 handwritten digits, shipped; harness/model/images.py) for a classifier
    dataset: Literal["synthetic", "pystdlib", "text", "c4", "digits"] = "synthetic"
    paths: list[str] = []  # text: files/globs; c4: json.gz shards
    eval_fraction: float = Field(0.05, gt=0, lt=0.5)
    # a local `tokenizers` JSON (tokenizer.json) instead of bytes, for any text dataset; needs pipenem[hf]
    tokenizer: str | None = None

    @model_validator(mode="after")
    def _images(self) -> DataConfig:
        if self.dataset == "digits" and (self.tokenizer is not None or self.paths):
            raise FieldError("tokenizer" if self.tokenizer is not None else "paths", "digits is an image dataset")
        return self


class TrainConfig(_Strict):
    mode: Literal["train", "infer"] = "train"
    # interleaved-1f1b / looped-bfs: named so they are refused with the reason (see torch_stage.py)
    schedule: Literal["gpipe", "1f1b", "interleaved-1f1b", "looped-bfs"] = "gpipe"
    steps: int = Field(20, ge=1)
    batch: int = Field(32, ge=1)
    micro_batches: int = Field(4, ge=1)
    lr: float = Field(3e-4, gt=0)
    warmup: int = Field(100, ge=0)
    decay_steps: int | None = Field(None, ge=1)  # lr reaches 0 at this step (default: steps); > warmup
    # after warm-up the lr falls to 0 at decay_steps: linearly (Beyond Top-K's recipe) or along a
    # cosine (torch's CosineAnnealingLR with eta_min 0: the recipe of seed 003's ResNet runs)
    lr_schedule: Literal["linear", "cosine"] = "linear"
    # adamw (decoupled weight decay; the default: the LM recipes) or sgd (momentum, L2 weight
    # decay added to the gradient as torch.optim.SGD does; the ResNet recipe)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    weight_decay: float = Field(0.01, ge=0)
    # the whole model's gradient norm is clipped to this (> 0); null turns clipping off
    grad_clip: float | None = Field(1.0, gt=0)
    # How a boundary's gradient goes back through the forward compressor: ``exact`` multiplies
    # it by the compressor's Jacobian (kept mask; lowrank's projection) as when compression is
    # part of the stage's autograd graph; ``straight-through`` passes it unchanged. Default
    # exact: it is the gradient of the network that actually ran (see README, row masking).
    boundary_grad: Literal["exact", "straight-through"] = "exact"
    # Fail a run whose link is down, or crawls with data queued, for longer than this many
    # seconds (default: 10× the largest message's transfer time at the planned rate, ≥ 30 s).
    stall_timeout: float | None = Field(None, gt=0)
    compress_inference: bool = True  # inference with C_fwd (False: measure the train/infer mismatch)
    # the held-out evaluation at the end also runs once with no boundary compressor, recorded
    # beside the compressed one (eval_loss_uncompressed, eval_accuracy_uncompressed): what a
    # model trained with compression does when served without it. Default off: one more pass.
    eval_uncompressed: bool = False
    target_loss: float | None = None

    @model_validator(mode="after")
    def _micro(self) -> TrainConfig:
        if self.batch % self.micro_batches:
            raise FieldError("micro_batches", f"{self.micro_batches} does not divide batch {self.batch}")
        if self.decay_steps is not None and self.decay_steps <= self.warmup:
            raise FieldError(
                "decay_steps", f"{self.decay_steps} ends the decay before warm-up ({self.warmup} steps) is over"
            )
        return self


class CompressionConfig(_Strict):
    fwd: Any = "none"  # compressor spec: a name or {name: ..., params}
    bwd: Any = "none"


_TORCH_DEVICE = re.compile(r"cpu|cuda(:\d+)?|auto")


class ComputeConfig(_Strict):
    """How stages compute. ``real``: the model runs on ``device``; ``modeled``: each stage sleeps
    the time the device ``profile`` needs for its FLOPs (README: modeled vs real time)."""

    mode: Literal["real", "modeled"] = "real"
    # where stages (and the twin) run: cpu, cuda (the current GPU), cuda:N, or auto (stage i
    # on GPU i mod count). A GPU that is not there is refused up front, never replaced by the CPU.
    device: str = "cpu"
    profile: str = "a10g"  # modeled: a built-in profile name or a profile YAML file
    # bfloat16: torch.autocast on the stage's device (the residual stream and the boundary
    # tensors stay float32 in this model; matmuls run in bf16)
    dtype: Literal["float32", "bfloat16"] = "float32"
    # modeled: encode/decode charged (dense + payload bytes) / the profile's memory bandwidth
    # instead of timed on this host's CPU; default real, the codec's own cost measured here
    codec: Literal["real", "modeled"] = "real"
    threads: int = Field(1, ge=1)  # torch threads per stage worker (several stages share the cores)

    @model_validator(mode="after")
    def _check(self) -> ComputeConfig:
        if not _TORCH_DEVICE.fullmatch(self.device):
            hint = (
                f"{self.device!r} is a device profile: write compute.profile: {self.device} "
                if self.device in BUILTIN or self.device.endswith((".yaml", ".yml"))
                else ""
            )
            raise FieldError("device", f"{hint}(compute.device is where real compute runs: cpu, cuda, cuda:N or auto)")
        if self.codec == "modeled" and self.mode != "modeled":
            raise FieldError("codec", "modeled codec time needs compute.mode: modeled (its profile's memory bandwidth)")
        return self


class RunSpec(_Strict):
    topology: str  # a topology YAML file
    backend: Literal["netns", "docker", "twin"] = "netns"
    # who schedules and moves the micro-batches: pipenem's own GPipe/1F1B (default: any compressor
    # pair, modeled compute, GPUs) or torch.distributed.pipelining (harness/runtime/torch_stage.py)
    runtime: Literal["pipenem", "torch"] = "pipenem"
    seed: int = Field(0, ge=0, lt=2**32)  # torch's generators and the data sampler take 32-bit seeds
    partition: list[int] | None = None  # blocks per stage; default: as even as possible
    model: AnyModel = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    compression: CompressionConfig = CompressionConfig()
    compute: ComputeConfig = ComputeConfig()
    log_every: int = Field(1, ge=1)


def build_spec(data: Any, source: str | None = None) -> RunSpec:
    if not isinstance(data, dict):
        raise ConfigError("", "a run config must be a mapping", source)
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, source) from None


def load_spec(path: str | Path) -> RunSpec:
    """A run config file; its ``topology`` is a path (relative to the file, or to the current
    folder) or a shipped topology's name."""
    path = Path(path)
    data = read_yaml(path, "config")
    if isinstance(data, dict) and isinstance(data.get("topology"), str) and not Path(data["topology"]).is_absolute():
        cand = path.parent / data["topology"]
        if cand.exists():
            data["topology"] = str(cand)
        elif not Path(data["topology"]).exists():
            try:
                data["topology"] = str(find("topology", data["topology"], "topology"))
            except ConfigError:
                pass  # the check names the missing file
    return build_spec(data, str(path))
