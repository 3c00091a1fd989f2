"""What a command needs beyond pipenem's own dependencies, said in one line (exit 2) before it
starts, instead of a traceback from deep inside: ``need("torch", "pipenem train")``."""

from __future__ import annotations

import importlib

from basics.errors import ConfigError

WHAT = {
    "torch": ("PyTorch", "pip install torch==2.13.0 (the CPU build; a CUDA build of torch for GPUs)"),
    "ray": ("Ray", "pip install 'pipenem[ray]'"),
    "transformers": ("Hugging Face transformers", "pip install 'pipenem[hf]'"),
    "docker": ("the Docker SDK for Python", "pip install 'pipenem[docker]'"),
}


def need(module: str, command: str) -> None:
    """ConfigError ("pipenem train needs PyTorch: pip install …") unless ``module`` imports (the
    command imports it anyway; a broken install is said the same way, with its error)."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        name, how = WHAT[module]
        missing = isinstance(exc, ModuleNotFoundError) and exc.name == module
        raise ConfigError(
            "", f"{command} needs {name}: {how}" + ("" if missing else f" (importing it: {exc})")
        ) from None
