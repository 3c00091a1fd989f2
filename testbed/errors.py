"""Errors the CLI turns into one clear message and exit status 2."""


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
