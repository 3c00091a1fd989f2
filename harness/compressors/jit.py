"""numba's ``njit`` as pipenem's compiled kernels use it (``kernels.py``, ``lane_kernels.py``).

numba itself is imported only when a kernel is first defined, so that a run which takes no
compiled path does not pay for it (~0.3 s and ~130 MiB with LLVM)."""

from __future__ import annotations


def njit():
    """numba's ``njit``, caching machine code on disk where numba finds a writable place (next
    to this file, else the user's cache folder); where it finds none (a read-only mount in a
    container, no home) the kernel is compiled in memory instead of failing."""
    import numba

    def jit(**opts):
        def wrap(fn):
            try:
                return numba.njit(**opts)(fn)
            except RuntimeError:  # "cannot cache function …: no locator available"
                return numba.njit(**{**opts, "cache": False})(fn)

        return wrap

    return jit
