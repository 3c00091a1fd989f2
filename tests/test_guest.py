"""pipenem's netem guest (user-mode Linux) from the host: output and exit status pass
through, nothing stays behind, Ctrl-C and timeouts stop it, bad input is refused."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest

from testbed import guest
from testbed.topology_file import load_topology
from tests.conftest import TOPOLOGIES, needs_guest, netns_names, pipenem, pipenem_in_own_session, wait_for


def _uml_pids() -> set[int]:
    out = set()
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if Path(f"/proc/{p}/comm").read_text().strip().startswith(("linux", "vmlinux")):
                    out.add(int(p))
            except OSError:
                pass
    return out


def _scratch() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("pipenem-guest-*")}


@needs_guest
def test_pipenem_in_the_guest_has_netem_and_passes_output_and_status_through() -> None:
    before_ns, before_scratch = netns_names(), _scratch()
    res = pipenem("guest", "--", "doctor", "--json", timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    checks = {c["name"]: c for c in json.loads(res.stdout)}
    assert checks["netem"]["ok"] and checks["netns"]["ok"], checks
    assert "netem guest" not in checks  # inside the guest it does not offer itself
    assert "exit 0" in res.stderr
    failing = guest.run(["/bin/sh", "-c", "echo out; echo err >&2; exit 7"], stdout=sys.stdout, stderr=sys.stderr)
    assert failing.rc == 7
    assert netns_names() == before_ns and _scratch() == before_scratch and not _uml_pids()


@needs_guest
def test_the_guest_keeps_namespaces_private_and_writes_outputs_to_the_host(tmp_path: Path) -> None:
    before = netns_names()
    out = tmp_path / "seen.txt"
    res = guest.run(["/bin/sh", "-c", f"ip netns add pnguesttest && ip netns list > {out}"])
    assert res.rc == 0
    assert "pnguesttest" in out.read_text()  # the guest wrote the host's file
    assert "pnguesttest" not in netns_names() and netns_names() == before  # its /run was its own


@needs_guest
def test_a_timeout_stops_the_guest_and_leaves_nothing() -> None:
    before = _scratch()
    with pytest.raises(TimeoutError, match="ran past 3 s"):
        guest.run(["sleep", "60"], timeout_s=3)
    assert not _uml_pids() and _scratch() == before


@needs_guest
def test_ctrl_c_shuts_the_guest_down() -> None:
    before = _scratch()
    proc = pipenem_in_own_session("guest", "--", "topo", "probe", "internet/lossy-3stage")
    try:
        booted = lambda: any(Path(tempfile.gettempdir(), d, "booted").exists() for d in _scratch() - before)  # noqa: E731
        wait_for(booted, 60, "the guest to start its command")
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-2000:]
    assert "interrupted" in out and "Traceback" not in out, out[-2000:]
    wait_for(lambda: not _uml_pids(), 10, "the guest's processes to be gone")
    assert _scratch() == before


def test_guest_refuses_a_missing_or_nested_command() -> None:
    for args in (("guest",), ("guest", "--", "guest", "--", "doctor")):
        res = pipenem(*args)
        assert res.returncode == 2 and "ARGS" in res.stderr, res.stderr


def test_internet_presets_validate_need_netem_and_cite_their_source() -> None:
    presets = sorted((TOPOLOGIES / "internet").glob("*.yaml"))
    assert len(presets) >= 3
    for f in presets:
        topo = load_topology(f)
        assert topo.needs_netem(), f.name
        if f.name != "lossy-3stage.yaml":  # a synthetic fixture, said so in its comment
            assert "Source:" in f.read_text(), f"{f.name} cites no source"
