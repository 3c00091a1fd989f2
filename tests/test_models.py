"""Bring your own model: transformers causal LMs from a config, and user factories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from basics.errors import ConfigError
from harness.config.schema import build_spec
from harness.runtime.check import check_run
from harness.runtime.twin import run_twin
from tests.conftest import ROOT, TOPOLOGIES, needs_netns, pipenem

TOPO = str(TOPOLOGIES / "ci-4stage.yaml")
TRAIN = {"steps": 4, "batch": 4, "micro_batches": 2, "lr": 3e-3, "warmup": 0}
GPT2 = {"hf": "gpt2", "config": {"n_embd": 32, "n_layer": 4, "n_head": 4, "vocab_size": 256}, "ctx": 16}
LLAMA = {
    "hf": "llama",
    "config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
    },
    "ctx": 16,
}
FACTORY = {
    "factory": "examples.factory_model:build_stages",
    "args": {"hidden": 32},
    "d_model": 32,
    "n_layers": 4,
    "vocab": 256,
    "ctx": 16,
}

hf = pytest.mark.skipif(
    __import__("importlib").util.find_spec("transformers") is None,
    reason="the hf extra is not installed (pip install 'pipenem[hf]')",
)


ALL_MODELS = [
    pytest.param(GPT2, marks=hf, id="gpt2"),
    pytest.param(LLAMA, marks=hf, id="llama"),
    pytest.param(FACTORY, id="factory"),
]


def _spec(model: dict, **extra: object) -> object:
    return build_spec({"topology": TOPO, "model": model, "train": TRAIN, **extra})


@hf
@pytest.mark.parametrize("model", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_split_stages_compute_the_whole_models_logits(model: dict) -> None:
    from harness.model.hf import build_hf_stages, whole_model_logits

    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    h = ids
    for stage in build_hf_stages(model["hf"], model["config"], [1, 2, 0, 1], seed=3):
        h = stage(h)
    assert torch.equal(h, whole_model_logits(model["hf"], model["config"], 3, ids))


@hf
@pytest.mark.parametrize(
    "model,field,words",
    [
        ({"hf": "gpt2", "config": {"n_embdd": 32}}, "model.config.n_embdd", "not a field of transformers' GPT2Config"),
        ({"hf": "openai-community/gpt2"}, "model.hf", "downloads nothing"),
        ({"hf": "no-such-model"}, "model.hf", "not a transformers model type"),
        ({"hf": "gpt2", "config": {"vocab_size": 100}}, "model.config.vocab_size", "byte-level"),
    ],
)
def test_hf_configs_are_checked_before_anything_runs(model: dict, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        check_run(_spec(model))
    assert exc.value.field == field and words in str(exc.value)


@hf
def test_tied_embeddings_across_stages_are_refused() -> None:
    model = {**GPT2, "config": {**GPT2["config"], "tie_word_embeddings": True}}
    with pytest.raises(ConfigError) as exc:
        run_twin(_spec(model))
    assert exc.value.field == "model.config.tie_word_embeddings"


def test_a_factory_that_cannot_be_imported_is_named() -> None:
    with pytest.raises(ConfigError) as exc:
        check_run(_spec({**FACTORY, "factory": "no_such_pkg.models:build"}))
    assert exc.value.field == "model.factory" and "no_such_pkg" in str(exc.value)


@pytest.mark.parametrize(
    "model",
    ALL_MODELS,
)
def test_own_models_train_in_the_twin(model: dict) -> None:
    rows = run_twin(_spec(model, train={**TRAIN, "steps": 8}))
    losses = [r["loss"] for r in rows]
    assert losses[-1] < losses[0]


@needs_netns
@pytest.mark.netns
@pytest.mark.parametrize(
    "model",
    ALL_MODELS,
)
def test_own_models_distributed_equal_the_twin_bit_for_bit(tmp_path: Path, model: dict) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"topology": TOPO, "model": model, "train": TRAIN}))
    r = pipenem("train", str(cfg), "--out", str(tmp_path / "d"), "--quiet", cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    dist = json.loads((tmp_path / "d" / "summary.json").read_text())["losses"]
    twin = [row["loss"] for row in run_twin(_spec(model))]
    assert dist == twin


@hf
def test_a_suite_over_an_hf_model_runs_and_reports(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "name": "hf-suite",
                "topology": TOPO,
                "base": {"model": GPT2, "train": TRAIN},
                "axes": {
                    "compressor": [{"label": "none"}, {"label": "column", "fwd": "column", "bwd": "column"}],
                    "rate": [0.5],
                    "execution": ["twin"],
                },
            }
        )
    )
    out = tmp_path / "res"
    r = pipenem("run", str(suite), "--out", str(out))
    assert r.returncode == 0 and "2 ran" in " ".join(r.stdout.split()), r.stdout + r.stderr
    r = pipenem("report", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (out / "report.html").exists() and "hf-suite" in (out / "report.html").read_text()


def _bpe_tokenizer(path: Path, vocab: int = 400) -> Path:
    """A small BPE tokenizer trained here on the synthetic text, saved as a tokenizers JSON."""
    tokenizers = pytest.importorskip("tokenizers", reason="tokenizers comes with pipenem[hf]")
    from harness.model.data import synthetic_text

    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab, special_tokens=["[UNK]"])
    tok.train_from_iterator(synthetic_text(200_000, 0).splitlines(), trainer)
    out = path / "tokenizer.json"
    tok.save(str(out))
    return out


def test_a_local_tokenizer_file_feeds_the_model_its_ids(tmp_path: Path) -> None:
    from harness.model.data import load_streams

    tok = _bpe_tokenizer(tmp_path)
    spec = build_spec(
        {
            "topology": TOPO,
            "model": {**LLAMA, "config": {**LLAMA["config"], "vocab_size": 400}},
            "data": {"dataset": "synthetic", "tokenizer": str(tok)},
            "train": {**TRAIN, "steps": 12},
        }
    )
    check_run(spec)
    train, _ = load_streams(spec.data, spec.seed)
    assert train.max() >= 256 and train.max() < 400  # ids beyond bytes: the tokenizer's, not bytes
    rows = run_twin(spec)
    assert rows[-1]["loss"] < rows[0]["loss"]
    # a vocabulary smaller than the tokenizer's is refused by name; so is a name that is not a file
    small = build_spec({**spec.model_dump(mode="json"), "model": {**LLAMA}})
    with pytest.raises(ConfigError) as err:
        check_run(small)
    assert err.value.field == "model.config.vocab_size" and "tokenizer's vocabulary (400" in err.value.message
    hub = build_spec({**spec.model_dump(mode="json"), "data": {"dataset": "synthetic", "tokenizer": "gpt2"}})
    with pytest.raises(ConfigError) as err:
        check_run(hub)
    assert err.value.field == "data.tokenizer" and "nothing is downloaded" in err.value.message


def test_fidelity_measures_a_configured_models_real_boundary_activation(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"topology": TOPO, "model": LLAMA, "data": {"dataset": "pystdlib"}, "train": TRAIN}))
    r = pipenem(
        "fidelity",
        "--config",
        str(cfg),
        "--boundary",
        "0",
        "--compressors",
        "column",
        "--rates",
        "0.5",
        "--rank",
        "2",
        "--json",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["shape"] == [2, 16, 32] and "boundary 0-1 (hf:llama" in out["source"]
    assert 0 < out["rows"][0]["relative_error"] < 1
    from harness.model.capture import boundary_activation

    run = check_run(build_spec({"topology": TOPO, "model": LLAMA, "data": {"dataset": "pystdlib"}, "train": TRAIN}))
    x, k = boundary_activation(run.spec, run.partition)
    assert k == 1 and x.shape == (2, 16, 32) and x.std() > 0  # default: the middle boundary
    bad = pipenem("fidelity", "--config", str(cfg), "--boundary", "3")
    assert bad.returncode == 2 and "--boundary" in bad.stderr + bad.stdout
