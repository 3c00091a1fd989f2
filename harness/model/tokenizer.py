"""Tokenizers: bytes by default, or a local ``tokenizers`` JSON (``data.tokenizer``; nothing is
downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

from basics.errors import ConfigError


class ByteTokenizer:
    vocab = 256

    @staticmethod
    def encode(text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(text.encode("utf-8", errors="replace")), dtype=torch.uint8)

    @staticmethod
    def decode(tokens: torch.Tensor) -> str:
        return bytes(tokens.to(torch.uint8).tolist()).decode("utf-8", errors="replace")


class FileTokenizer:
    """``data.tokenizer``: a local ``tokenizers`` JSON (a tokenizer.json as transformers saves
    it). Only ever read from the file: a hub name is refused, nothing is downloaded."""

    def __init__(self, path: str) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ConfigError("data.tokenizer", "needs the tokenizers package: pip install 'pipenem[hf]'") from None
        if not Path(path).is_file():
            raise ConfigError(
                "data.tokenizer", f"{path!r} is not a local file (a tokenizers JSON; nothing is downloaded)"
            )
        try:
            self._tok = Tokenizer.from_file(path)
        except Exception as exc:  # the Rust side raises plain Exceptions with its parser's message
            raise ConfigError("data.tokenizer", f"{path!r} is not a tokenizers JSON ({str(exc)[:200]})") from None
        self.vocab = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> torch.Tensor:
        # in 1 MiB pieces (a word cut at a piece boundary becomes two tokens; deterministic):
        # one call on 16 MB of text would hold every intermediate string at once
        step = 1 << 20
        chunks = [text[i : i + step] for i in range(0, len(text), step)]
        ids = [i for enc in self._tok.encode_batch(chunks, add_special_tokens=False) for i in enc.ids]
        return torch.tensor(ids, dtype=torch.int32)

    def decode(self, tokens: torch.Tensor) -> str:
        return self._tok.decode(tokens.tolist())


_TOKENIZERS: dict[str, FileTokenizer] = {}


def load_tokenizer(path: str | None) -> ByteTokenizer | FileTokenizer:
    """Bytes (None) or the tokenizer in ``path``, read once per process."""
    if path is None:
        return ByteTokenizer()
    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = FileTokenizer(path)
    return _TOKENIZERS[path]
