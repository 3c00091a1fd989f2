"""Shared fixtures. Integration tests need root + netns; they skip with the reason elsewhere,
but on this project's machines and CI (root) they run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# One OpenMP/torch thread per test process (and the CLIs it starts): on a machine whose other
# core is busy, OpenMP's spinning threads made one batched least-squares test take 80 s, not 0.1 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import signal

# A shell that starts a job in the background without job control (`cmd &` in a script, a
# CI runner's wrapper) starts it with SIGINT *ignored*, and an ignored signal stays ignored
# across exec: every pipenem the tests start would then shrug off the Ctrl-C they send it
# (Python installs its KeyboardInterrupt handler only where SIGINT is at its default). A
# handler installed here is reset to the default on exec, so the children get Ctrl-C again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGIES = ROOT / "topologies"

# the integration tests' run: a tiny model over the 4-stage CI topology, learnable in a few steps
TINY = {"d_model": 32, "n_layers": 4, "n_heads": 4, "ctx": 32}
TINY_RUN = {
    "topology": str(TOPOLOGIES / "ci-4stage.yaml"),
    "seed": 3,
    "model": TINY,
    "data": {"dataset": "synthetic"},
    "train": {"steps": 6, "batch": 8, "micro_batches": 4, "warmup": 2, "lr": 0.01},
}


def with_overrides(config: dict, **over: object) -> dict:
    """``config`` with each given section merged into its own (one level deep); other keys replaced."""
    out = dict(config)
    for k, v in over.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _netns_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) to create network namespaces"
    try:
        from testbed.capabilities import kernel_features

        feats = kernel_features()
    except Exception as exc:
        return f"cannot probe kernel features: {exc}"
    for key in ("netns", "veth", "tbf"):
        if feats.get(key):
            return f"kernel lacks {key}: {feats[key]}"
    return None


NETNS_REASON = _netns_reason()
needs_netns = pytest.mark.skipif(NETNS_REASON is not None, reason=NETNS_REASON or "")


def _docker_reason() -> str | None:
    if NETNS_REASON:
        return NETNS_REASON
    from testbed.capabilities import docker_engine

    why = docker_engine()
    return f"docker engine: {why}" if why else None


needs_docker = pytest.mark.skipif(_docker_reason() is not None, reason=_docker_reason() or "")


def _netem_reason() -> str | None:
    if NETNS_REASON:
        return NETNS_REASON
    from testbed.capabilities import kernel_features

    why = kernel_features().get("netem")
    if why is None:
        return None
    why = f"this kernel has no netem ({why}); tox -e netem runs these tests in pipenem's guest"
    if os.environ.get("PIPENEM_REQUIRE_NETEM") == "1":  # tox -e netem: missing netem is a failure
        raise RuntimeError(why)
    return why


NETEM_REASON = _netem_reason()
needs_netem = pytest.mark.skipif(NETEM_REASON is not None, reason=NETEM_REASON or "")


def _guest_reason() -> str | None:
    if os.environ.get("PIPENEM_IN_GUEST") == "1":
        return "already inside a guest"
    if os.geteuid() != 0:
        return "the guest's netns tests need root"
    from testbed import guest

    ok, why = guest.available()
    return None if ok else f"no netem guest here: {why}"


def needs_guest(fn):
    """Skip unless a netem guest boots here (decided when the test runs: it boots one)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        why = _guest_reason()
        if why:
            pytest.skip(why)
        return fn(*a, **kw)

    return wrapper


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own run registry (inherited by the CLI subprocesses it starts)."""
    d = tmp_path / "state"
    monkeypatch.setenv("PIPENEM_STATE_DIR", str(d))
    return d


def pipenem(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "pipenem.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=kw.pop("cwd", ROOT),
        **kw,
    )


def pipenem_in_own_session(*args: str) -> subprocess.Popen:
    """The real CLI in its own process group, output captured: a Ctrl-C sent to the group
    reaches it and its children, as from a terminal."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipenem.main", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def netns_names() -> set[str]:
    from pyroute2 import netns

    return set(netns.listnetns())


def link_names() -> set[str]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


def wait_for(condition, timeout: float, what: str, poll: float = 0.2):
    """Poll ``condition()`` until it returns something truthy (returned), at most ``timeout`` s;
    fail naming ``what`` was awaited. Tests wait on conditions like this, never on a bare sleep."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def worker_pids(run_dir: Path | str) -> dict[int, int]:
    """{stage: pid} of the running stage workers of the run writing into ``run_dir`` (each stage
    writes ``stage{N}.pid`` when it starts; a concurrent test's stages never match)."""
    found = {}
    for f in Path(run_dir).glob("stage*.pid"):
        try:
            pid = int(f.read_text())
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError):
            continue
        if state != "Z":
            found[int(f.stem.removeprefix("stage"))] = pid
    return found
