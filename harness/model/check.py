"""A model checked against what its own library and the data say, before anything runs."""

from __future__ import annotations

from basics.errors import ConfigError
from harness.config.schema import AnyModel, DataConfig, FactoryModelConfig, HFModelConfig
from harness.model.stages import Geometry, geometry


def check_model(model: AnyModel, data: DataConfig | None = None) -> Geometry:
    """The model's geometry, after what only its own library can say (a transformers config's
    fields, a factory's import) and the data's needs: a vocabulary that holds every token id
    (bytes: 256; a ``data.tokenizer``: its vocabulary). ConfigError naming the field."""
    geo = geometry(model)  # unknown transformers config fields or model type: refused here
    field = "model.config.vocab_size" if isinstance(model, HFModelConfig) else "model.vocab"
    if isinstance(model, FactoryModelConfig):
        from harness.model.factory import load_factory

        load_factory(model.factory)
    if data is not None and data.tokenizer is not None:
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
    if len(part) != stages:
        raise ConfigError("partition", f"has {len(part)} entries but the topology has {stages} stages")
    if sum(part) != n_layers or min(part) < 0:
        raise ConfigError("partition", f"{part} covers {sum(part)} blocks, the model has n_layers = {n_layers}")
    return part
