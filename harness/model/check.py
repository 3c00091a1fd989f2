"""A model checked against what its own library and the data say, before anything runs."""

from __future__ import annotations

from basics.errors import ConfigError
from harness.config.schema import IMAGE_CLASSES, AnyModel, DataConfig, FactoryModelConfig, HFModelConfig
from harness.model.stages import Geometry, geometry


def check_model(model: AnyModel, data: DataConfig | None = None) -> Geometry:
    """The model's geometry, after what only its own library can say (a transformers config's
    fields, a factory's import), its own limits (a learned position table's length) and the
    data's needs: a vocabulary that holds every token id (bytes: 256; a ``data.tokenizer``: its
    vocabulary; an image dataset: its classes). ConfigError naming the field."""
    geo = geometry(model)  # unknown transformers config fields or model type: refused here
    if isinstance(model, HFModelConfig):
        _check_positions(model)
    field = "model.config.vocab_size" if isinstance(model, HFModelConfig) else "model.vocab"
    if isinstance(model, FactoryModelConfig):
        from harness.model.factory import load_factory

        load_factory(model.factory)
    n_classes = IMAGE_CLASSES.get(data.dataset) if data is not None else None
    if n_classes is not None:
        if geo.vocab < n_classes:
            raise ConfigError(field, f"{geo.vocab} outputs cannot score the {n_classes} classes of {data.dataset}")
    elif data is not None and data.tokenizer is not None:
        from harness.model.tokenizer import load_tokenizer

        need = load_tokenizer(data.tokenizer).vocab
        if geo.vocab < need:
            raise ConfigError(field, f"{geo.vocab} is below the tokenizer's vocabulary ({need} ids)")
    elif geo.vocab < 256:
        raise ConfigError(field, f"{geo.vocab} is below 256: the datasets are byte-level (256 token ids)")
    return geo


def resolve_partition(partition: list[int] | None, n_layers: int, stages: int) -> list[int]:
    """Blocks per stage: as given (checked against the model and the topology), or as even as possible."""
    if partition is None:
        if n_layers < stages:
            raise ConfigError(
                "partition",
                f"{n_layers} layers cannot fill {stages} stages; give a partition with empty stages explicitly",
            )
        base, extra = divmod(n_layers, stages)
        return [base + (1 if i < extra else 0) for i in range(stages)]
    part = list(partition)
    negative = [i for i, n in enumerate(part) if n < 0]
    if negative:
        raise ConfigError(f"partition[{negative[0]}]", f"{part[negative[0]]}: a stage holds 0 or more blocks")
    if len(part) != stages:
        raise ConfigError("partition", f"has {len(part)} entries but the topology has {stages} stages")
    if sum(part) != n_layers:
        raise ConfigError("partition", f"{part} covers {sum(part)} blocks, the model has n_layers = {n_layers}")
    return part


def _check_positions(model: HFModelConfig) -> None:
    """A learned position table (GPT-2's ``wpe``) has ``n_positions`` rows: a longer ``ctx`` would
    index past it. Rotary models (Llama, Qwen2, Mistral) have no table: they run at any ctx,
    ``max_position_embeddings`` is only what the rotary scaling was set up for (not refused)."""
    from harness.model.hf import build_config

    built = build_config(model.hf, model.config)
    table = getattr(built, "n_positions", None) if built.model_type == "gpt2" else None
    if table is not None and model.ctx > table:
        given = "model.ctx" if "ctx" in model.model_fields_set else "model.ctx (default)"
        raise ConfigError(
            "model.ctx",
            f"{given} = {model.ctx} exceeds model.config.n_positions = {table}, the length of the model's "
            "learned position table: set model.ctx ≤ n_positions or raise model.config.n_positions",
        )


def check_buildable(model: AnyModel, partition: list[int], seed: int) -> None:
    """Build a transformers or factory model's stages once, on the meta device (no memory, no
    compute), so what its constructor refuses (a width its heads do not divide; a factory that
    raises, or returns the wrong number of stages or things that are not modules) is said
    before any namespace exists. A factory that cannot build on the meta device is built for
    real, once."""
    if not isinstance(model, HFModelConfig | FactoryModelConfig):
        return  # the built-in decoder's limits are its schema's
    import torch

    from harness.model.stages import build_stages

    field = "model.config" if isinstance(model, HFModelConfig) else "model.factory"
    what = f"transformers {model.hf}" if isinstance(model, HFModelConfig) else model.factory
    try:
        with torch.device("meta"):
            build_stages(model, partition, seed)
        return
    except ConfigError:
        raise
    except Exception as exc:  # the model's own constructor said no: its words, with the field
        if isinstance(model, HFModelConfig) or not _meta_only(exc):
            raise ConfigError(field, f"{what} cannot be built: {type(exc).__name__}: {_first_line(exc)}") from None
    try:  # a factory that needs real tensors to build
        build_stages(model, partition, seed)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(field, f"{what} cannot be built: {type(exc).__name__}: {_first_line(exc)}") from None


def _meta_only(exc: BaseException) -> bool:
    """Whether an error is the meta device's (an op with no meta kernel, reading a value)."""
    return isinstance(exc, NotImplementedError) or "meta" in str(exc).lower()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
