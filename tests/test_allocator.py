"""harness.runtime.allocator: stage workers run on tcmalloc where the host has it, and say so."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.runtime.allocator import active, find_tcmalloc, preload_env

SAY = ["-c", "from harness.runtime.allocator import active; print(active())"]


def _run(env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "harness.runtime.allocator", *SAY], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.skipif(
    find_tcmalloc() is None, reason="no libtcmalloc on this host (.ci/run installs libtcmalloc-minimal4)"
)
def test_the_wrapper_runs_python_on_tcmalloc_and_the_process_knows_it() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PIPENEM_ALLOCATOR")}
    assert _run(env) == "tcmalloc"
    assert _run({**env, "PIPENEM_ALLOCATOR": "system"}) == "system malloc"
    # an existing preload is kept, not replaced
    assert preload_env({"LD_PRELOAD": "/x/libfoo.so"})["LD_PRELOAD"] == f"{find_tcmalloc()} /x/libfoo.so"


def test_without_tcmalloc_the_wrapper_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harness.runtime.allocator.find_tcmalloc", lambda: None)
    env = {"PATH": "/usr/bin", "LD_PRELOAD": ""}
    assert preload_env(env) == env
    assert active() in ("tcmalloc", "system malloc")  # this test process: whatever started it
