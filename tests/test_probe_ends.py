"""The probe's ends on loopback (no namespace needed): what they import and how long the echo lives.

Each end is started inside a host, in the user-mode Linux guest too, where a Python import
costs ~20x what it costs here: the echo once timed itself out while its sender was still
importing numpy and pyroute2, and every probe of a delayed link counted 100% loss (CI).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from tests.conftest import ROOT


def test_the_ends_and_nsenter_import_only_the_standard_library() -> None:
    code = (
        "import json, sys, testbed.probe_ends, testbed.nsenter; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} | set(sys.modules))))"
    )
    mods = json.loads(
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    )
    ours = {m for m in mods if m.startswith("testbed") or m in ("basics", "harness", "pipenem")}
    assert ours == {"testbed", "testbed.probe_ends", "testbed.nsenter"}, ours
    assert not {"pyroute2", "numpy", "scipy", "pandas", "torch"} & set(mods), mods


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_echo_lives_until_its_driver_closes_stdin_and_counts_every_arrival() -> None:
    port = str(_free_udp_port())
    end = [sys.executable, "-m", "testbed.probe_ends"]
    echo = subprocess.Popen(
        end + ["echo", "--bind", "127.0.0.1", "--port", port],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert echo.stdout.readline().strip() == "READY"
        ping = subprocess.run(
            end + ["ping", "--to", "127.0.0.1", "--port", port, "--count", "200", "--interval", "0.001"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ping.returncode == 0, ping.stderr
        assert echo.poll() is None  # the sender's end is no reason to stop: only the driver's word is
        out = json.loads(echo.communicate(timeout=30)[0].splitlines()[-1])  # closes stdin
    finally:
        if echo.poll() is None:
            echo.kill()
            echo.wait()
    assert echo.returncode == 0
    assert sorted(out["order"]) == list(range(200))
    res = json.loads(ping.stdout.splitlines()[-1])
    assert res["sent"] == 200 and len(res["rtt_ms"]) == 200
