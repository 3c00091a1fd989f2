"""Seeded datasets (nothing is downloaded), tokenized by ``tokenizer.py`` (bytes by default).

- ``synthetic``: generated text with learnable structure — a seeded vocabulary of
  pseudo-words and a sparse word-level Markov chain — so loss curves separate good
  compressors from bad ones.
- ``pystdlib``: the Python standard library source of the running interpreter (real
  text present on every machine); files are split into train/eval by a hash of their name.
- ``text``: any local files (globs).
- ``c4``: local C4 ``json.gz`` shards in their real format, loaded with 🤗 ``datasets``.
- ``digits``: images, not text: the 8×8 handwritten digits that ship with pipenem
  (``images.py``); a batch is (images (b, 1, 8, 8), labels (b,)), the model a classifier.

Every stage process builds the same stream and draws the same batches from
``(seed, step)``, so only the first stage reads inputs and only the last reads targets.
"""

from __future__ import annotations

import glob
import sysconfig
import zlib
from pathlib import Path

import numpy as np
import torch

from basics.errors import ConfigError
from harness.config.schema import IMAGE_CLASSES, DataConfig
from harness.model.images import SIDE, ImageBatches, ImageSet, held_out_batches, load_digits
from harness.model.tokenizer import ByteTokenizer, FileTokenizer, load_tokenizer

MAX_BYTES = 16 * 1024 * 1024  # cap per split, to bound memory in every stage process
Source = torch.Tensor | ImageSet  # a token stream, or images with labels


def classes(cfg: DataConfig) -> int | None:
    """The number of classes of an image dataset; None for text (a language model's targets)."""
    return IMAGE_CLASSES.get(cfg.dataset)


def example_input(cfg: DataConfig, ctx: int, batch: int) -> torch.Tensor:
    """Zeros shaped as a batch of inputs: token ids (batch, ctx), or images (batch, 1, H, W)."""
    if classes(cfg):
        return torch.zeros(batch, 1, SIDE, SIDE)
    return torch.zeros(batch, ctx, dtype=torch.int64)


def logits_shape(cfg: DataConfig, ctx: int, batch: int, vocab: int) -> tuple[int, ...]:
    """What the last stage returns: (batch, ctx, vocab) next-token logits, or (batch, classes)."""
    return (batch, vocab) if classes(cfg) else (batch, ctx, vocab)


def targets_per_sample(cfg: DataConfig, ctx: int) -> int:
    """What throughput counts per sample: its ``ctx`` tokens (text), or the one image (images)."""
    return 1 if classes(cfg) else ctx


def synthetic_text(n_bytes: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=rng.integers(2, 8))) for _ in range(400)]
    succ = rng.integers(0, len(words), size=(len(words), 4))  # each word has 4 likely successors
    n_words = n_bytes // 4 + 16
    # all random draws up front (fast); the chain itself is a cheap loop over ints
    pick = rng.choice(4, size=n_words, p=[0.55, 0.25, 0.12, 0.08])
    jump = rng.random(n_words) < 0.05
    restart = rng.integers(0, len(words), size=n_words)
    lengths = rng.integers(4, 14, size=n_words)
    out, size, w, i, s = [], 0, 0, 0, 0
    while size < n_bytes and i + 14 < n_words:
        sentence = []
        for _ in range(lengths[s]):
            w = restart[i] if jump[i] else succ[w, pick[i]]
            sentence.append(words[w])
            i += 1
        s += 1
        line = " ".join(sentence).capitalize() + ".\n"
        out.append(line)
        size += len(line)
    return "".join(out)


def _split_files(files: list[Path], eval_fraction: float) -> tuple[list[Path], list[Path]]:
    bucket = max(2, round(1 / eval_fraction))
    ev = [f for f in files if zlib.crc32(f.name.encode()) % bucket == 0]
    tr = [f for f in files if zlib.crc32(f.name.encode()) % bucket != 0]
    return tr, ev


def _read(files: list[Path]) -> str:
    parts, size = [], 0
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        parts.append(text)
        size += len(text)
        if size >= MAX_BYTES:
            break
    return "\n".join(parts)


def data_files(cfg: DataConfig) -> list[Path]:
    """The local files a ``text``/``c4`` dataset reads ([] for the built-in ones); ConfigError
    naming ``data.paths`` when none is given or none matches."""
    if cfg.dataset in ("synthetic", "pystdlib", "digits"):
        return []
    if not cfg.paths:
        raise ConfigError("data.paths", f"the {cfg.dataset} dataset needs local files (paths)")
    files = sorted({Path(f) for pattern in cfg.paths for f in glob.glob(pattern, recursive=True) if Path(f).is_file()})
    if not files:
        raise ConfigError("data.paths", f"no file matches {cfg.paths}")
    return files


def load_streams(cfg: DataConfig, seed: int) -> tuple[Source, Source]:
    """(train, held-out): token streams (uint8 bytes, or int32 ids of ``cfg.tokenizer``), or the
    image sets of an image dataset."""
    if cfg.dataset == "digits":
        return load_digits(cfg.eval_fraction)
    tok = load_tokenizer(cfg.tokenizer)
    if cfg.dataset == "synthetic":
        text = synthetic_text(1_000_000, seed)
        cut = int(len(text) * (1 - cfg.eval_fraction))
        return tok.encode(text[:cut]), tok.encode(text[cut:])
    if cfg.dataset == "pystdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "test" not in p.parts)
        tr, ev = _split_files(files, cfg.eval_fraction)
        return tok.encode(_read(tr)), tok.encode(_read(ev))
    files = data_files(cfg)
    if cfg.dataset == "text":
        if len(files) == 1:
            text = _read(files)
            cut = int(len(text) * (1 - cfg.eval_fraction))
            return tok.encode(text[:cut]), tok.encode(text[cut:])
        tr, ev = _split_files(files, cfg.eval_fraction)
        return tok.encode(_read(tr or files)), tok.encode(_read(ev or files[-1:]))
    return _load_c4(files, cfg.eval_fraction, tok)


def _load_c4(
    files: list[Path], eval_fraction: float, tok: ByteTokenizer | FileTokenizer
) -> tuple[torch.Tensor, torch.Tensor]:
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local shards only: never reach for a hub
    from datasets import load_dataset

    ds = load_dataset("json", data_files=[str(f) for f in files], split="train")
    if "text" not in ds.column_names:
        raise ConfigError("data.paths", f"C4 shards have a 'text' field; these have {ds.column_names}")
    texts, size = [], 0
    for row in ds:
        texts.append(row["text"])
        size += len(row["text"])
        if size >= MAX_BYTES:
            break
    n_eval = max(1, int(len(texts) * eval_fraction))
    return tok.encode("\n".join(texts[:-n_eval])), tok.encode("\n".join(texts[-n_eval:]))


class Batches:
    """Seeded random windows of ``ctx + 1`` tokens: the same (seed, step) -> the same batch anywhere."""

    def __init__(self, stream: torch.Tensor, ctx: int, batch: int, seed: int) -> None:
        if stream.numel() < ctx + 2:
            raise ConfigError("data", f"the dataset has {stream.numel()} tokens, fewer than ctx + 2 = {ctx + 2}")
        self.stream, self.ctx, self.batch, self.seed = stream, ctx, batch, seed

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        starts = torch.randint(0, self.stream.numel() - self.ctx - 1, (self.batch,), generator=g)
        idx = starts.unsqueeze(1) + torch.arange(self.ctx + 1)
        window = self.stream[idx].long()
        return window[:, :-1], window[:, 1:]


AnyBatches = Batches | ImageBatches


def make_batches(source: Source, ctx: int, batch: int, seed: int) -> AnyBatches:
    """The training batches of a source: token windows of ``ctx + 1``, or images and labels."""
    if isinstance(source, ImageSet):
        return ImageBatches(source, batch, seed)
    return Batches(source, ctx, batch, seed)


def eval_batches(source: Source, ctx: int, size: int, seed: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The held-out batches of ``size``: ``n`` seeded token windows (text), or the whole held-out
    image set in order (images; ``n`` does not apply)."""
    if isinstance(source, ImageSet):
        return held_out_batches(source, size)
    batches = Batches(source, ctx, size, seed + 1)
    return [batches.get(k) for k in range(n)]
