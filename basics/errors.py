"""Errors the CLI turns into one clear message and exit status 2, and the one place that turns
a pydantic validation error into such a message (topologies, run configs and suites alike)."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """Bad user input. ``field`` names where it is (``links[1].bandwidth.std``)."""

    def __init__(self, field: str, message: str, source: str | None = None) -> None:
        self.field = field
        self.message = message
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {message}" if field else f"{where}{message}")


class UnsupportedError(RuntimeError):
    """The input is valid but this machine cannot emulate it (e.g. delay without netem)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class Terminated(BaseException):
    """SIGTERM/SIGHUP turned into an exception so ``finally`` blocks (teardown) run; the CLI
    exits 143 on it. A BaseException, like KeyboardInterrupt: no ``except Exception`` swallows it."""


class FieldError(ValueError):
    """Raised inside a pydantic validator to name a field precisely, beyond pydantic's location:
    ``raise FieldError("n_heads", "does not divide d_model")`` on the model validator of ``model``
    becomes the field ``model.n_heads``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# pydantic's location parts that are not fields: union tags and validator wrappers (tags named
# ``union:…`` are skipped wherever they are defined)
_NOT_FIELDS = {"fixed", "normal", "uniform", "trace"}


def field_path(loc: tuple[Any, ...]) -> str:
    """pydantic's ``('links', 1, 'bandwidth', 'normal', 'std')`` -> ``links[1].bandwidth.std``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (
            part in _NOT_FIELDS or part.startswith(("function-", "tagged-union", "union:"))
        ):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def from_validation(exc: Any, source: str | None = None) -> ConfigError:
    """The first problem of a ``pydantic.ValidationError`` as one ConfigError naming its field."""
    err = exc.errors()[0]
    field = field_path(err["loc"])
    ctx_err = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_err, FieldError):
        return ConfigError(f"{field}.{ctx_err.field}" if field else ctx_err.field, ctx_err.message, source)
    msg = {
        "extra_forbidden": "unknown key",
        "missing": "required but missing",
        "too_short": "empty: needs at least one value",
    }.get(err["type"], err["msg"].removeprefix("Value error, "))
    return ConfigError(field, msg, source)
