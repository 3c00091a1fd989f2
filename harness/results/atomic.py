"""Writing a file so that readers see the old one or the new one, never half of it.

Kept apart from ``store.py`` (pandas): every stage worker writes its metrics with it, and
importing pandas + pyarrow there costs each stage process ~40 MB and 0.3 s.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` then rename over ``path``: readers see the old file or the new one, never a
    half-written one; on any failure (a full disk) the temporary file is removed."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:
            exc.filename = str(path)  # pyarrow's I/O errors do not say which file
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
