"""One owner per output folder: ``train``, ``run`` and ``reproduce`` lock ``--out`` exclusively.

The lock is an ``flock`` on ``OUT/.pipenem.lock`` (held by the open file, so the kernel
releases it on any exit, SIGKILL included); the file names the holder's PID for the
message a second run gets. A folder that cannot be written is refused before anything
is brought up.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from basics.errors import ConfigError

LOCK_NAME = ".pipenem.lock"


def check_writable(out: Path, option: str = "--out") -> None:
    """ConfigError naming the folder unless it can be created and written to."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".pipenem-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(option, f"cannot write to {str(out)!r}: {exc.strerror or exc}") from None


@contextmanager
def exclusive(out: Path, option: str = "--out") -> Iterator[Path]:
    """Hold ``out`` for this process; a second holder gets ConfigError (exit 2) at once."""
    check_writable(out, option)
    fh = open(out / LOCK_NAME, "a+")  # held for the whole block
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise ConfigError(
                option,
                f"{str(out)!r} is in use by another pipenem run (PID {holder}); wait for it or choose another folder",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield out
    finally:
        fh.close()  # releases the lock
