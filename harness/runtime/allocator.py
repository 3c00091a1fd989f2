"""Run stage workers on a caching malloc (tcmalloc) where the host has one.

glibc serves every allocation above 32 MiB with a fresh ``mmap`` and unmaps it on free,
so a stage that decodes a 64 MiB activation every micro-batch faults in 16k fresh pages
each time: ~22 ms per tensor on the 2-core dev machine, ten times the cost of writing
it. PyTorch's CPU tuning guide answers this with tcmalloc or jemalloc preloaded; jemalloc
was measured no better than glibc here, tcmalloc removes the cost (``python
benchmarks/compressors.py`` shows both). Turning glibc's mmap off instead was measured to
grow a stage's memory by ~0.6 GB (aligned 64 MiB blocks do not fit their freed holes).

``python -m harness.runtime.allocator ARGS...`` runs ``python ARGS...`` (the same interpreter)
with tcmalloc preloaded when the library exists *on the host it runs in* (a netns stage
sees the machine's /usr, a container its image's), and unchanged otherwise;
``PIPENEM_ALLOCATOR=system`` opts out.
Workers record :func:`active` so results say which allocator produced their timings.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import NoReturn

NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def find_tcmalloc() -> str | None:
    """Path of a tcmalloc shared library on this host, or None."""
    for name in NAMES:
        for d in DIRS:
            hits = glob.glob(os.path.join(d, name))
            if hits:
                return hits[0]
    return None


def active() -> str:
    """The allocator this process runs on, read from its own memory map."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "tcmalloc" in line:
                    return "tcmalloc"
    except OSError:
        return "unknown"
    return "system malloc"


def preload_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with tcmalloc added to LD_PRELOAD, if wanted and present."""
    lib = find_tcmalloc()
    if env.get("PIPENEM_ALLOCATOR", "tcmalloc") == "system" or lib is None or lib in env.get("LD_PRELOAD", ""):
        return env
    return {**env, "LD_PRELOAD": " ".join(filter(None, [lib, env.get("LD_PRELOAD")]))}


def exec_python(python_args: list[str]) -> NoReturn:
    """Replace this process by ``python PYTHON_ARGS...`` with tcmalloc preloaded where present
    (a preload only takes effect at process start)."""
    os.execve(sys.executable, [sys.executable, *python_args], preload_env(dict(os.environ)))


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m harness.runtime.allocator PYTHON-ARGS... (e.g. -m harness.runtime.worker RUN_DIR 0)")
    exec_python(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
